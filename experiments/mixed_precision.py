"""Mixed precision (bfloat16 compute, float32 parameters) vs float32, trained side by side.

    python experiments/mixed_precision.py                      # demo: digits, 1/16 widths, 3 seeds
    python experiments/mixed_precision.py --set seeds=0,1,2,3,4 --set data=folder:PATH

Trains the teacher (VGG19) and the student (VGG11) of vgg19_to_vgg11 from scratch with each
compute dtype and each seed, using that experiment's schedule for the preset, and writes
`results.md` / `results.json` (test accuracy per seed, mean and std per dtype) in the run
directory (default runs/mixed_precision/<preset>).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pdjax  # noqa: E402
from pdjax.cli import runs  # noqa: E402
import vgg19_to_vgg11  # noqa: E402
from pdjax.steps import Schedule  # noqa: E402
from pdjax.types import check  # noqa: E402

EXPERIMENT = "mixed_precision"


@dataclasses.dataclass(frozen=True)
class Config(pdjax.designs.prune_distill.ExperimentConfig):
    data: str = "digits"
    models: tuple[str, ...] = ("vgg19", "vgg11")
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    train: Schedule = vgg19_to_vgg11.demo().train

    def __post_init__(self) -> None:
        super().__post_init__()
        check([(pdjax.designs.common.distinct_among(self.models, pdjax.models.NAMES),
                f"models={self.models} must be distinct model names among {', '.join(pdjax.models.NAMES)}"),
               (pdjax.designs.common.distinct_among(self.dtypes, pdjax.models.COMPUTE_DTYPES),
                f"dtypes={self.dtypes} must be distinct among {', '.join(pdjax.models.COMPUTE_DTYPES)}")])


def demo() -> Config:
    return Config(width_multiplier=1 / 16, seeds=(0, 1, 2))


def cpu() -> Config:
    base = vgg19_to_vgg11.cpu()
    return Config(data=base.data, width_multiplier=base.width_multiplier, train=base.train)


def paper() -> Config:
    base = vgg19_to_vgg11.paper()
    return Config(data="tfds:cifar100", train=base.train)


PRESETS = {"demo": demo, "cpu": cpu, "paper": paper}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    preset, config, out, run_config = runs.start(EXPERIMENT, PRESETS, argv, __doc__)
    data = pdjax.designs.common.load_data(config, "data")
    stages = pdjax.designs.stage.Stages(config, data, out)
    rows = []
    for model in config.models:
        widths = pdjax.models.scaled_widths(model, config.width_multiplier)
        for dtype in config.dtypes:
            accs, seconds = [], []
            for seed in config.seeds:
                _, result, _ = stages.train(f"{model}_{dtype}_seed{seed}", model, widths, config.train, seed,
                                            compute_dtype=dtype)
                accs.append(result.test_accuracy)
                seconds.append(result.train_seconds)
            rows.append({"model": model, "compute dtype": dtype, "seeds": len(accs),
                         "test acc per seed": ", ".join(f"{a:.4f}" for a in accs),
                         "mean": statistics.mean(accs),
                         "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                         "train s (mean)": statistics.mean(seconds)})
    columns = [("model", "model", "s"), ("compute dtype", "compute dtype", "s"), ("seeds", "seeds", "d"),
               ("test acc per seed", "test acc per seed", "s"), ("mean", "mean test acc", ".4f"),
               ("std", "std", ".4f"), ("train s (mean)", "train s (mean)", ".1f")]
    env = pdjax.designs.common.environment()
    markdown = (f"# {EXPERIMENT}, preset `{preset}`\n\nCommand: `python experiments/{EXPERIMENT}.py "
                f"--preset {preset}`\n\nData: {config.data}; widths x{config.width_multiplier:g}; "
                f"{config.train.epochs} epochs; test accuracy of the best-validation epoch.\n\n"
                + pdjax.render.markdown_table(rows, columns)
                + f"\n{pdjax.designs.common.machine_note(env)}\n")
    results = {**run_config, "rows": rows, "environment": env, **({"plan": stages.plan} if stages.plan else {})}
    pdjax.render.write_results(out, results, markdown)
    print(markdown)
    return results


if __name__ == "__main__":
    runs.run_cli(main, sys.argv[1:])
