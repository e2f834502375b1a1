"""How the `cpu` presets' widths were chosen: validation accuracy of candidate teachers and
students trained from scratch on the shared CIFAR-10 JPEGs with the cpu preset's schedule.

    python experiments/cpu_preset_probe.py                      # the candidates below
    python experiments/cpu_preset_probe.py --models vgg19:1/8 vgg11:1/16
    python experiments/cpu_preset_probe.py --models resnet18:1/16:stem_width=4 mobilenetv2:1/16 \
        --epochs 10 --milestones 3,6,8 --lr 0.05 --out runs/cpu_preset_probe_resnet

Only validation accuracy is printed and written (`results.md`): settings are chosen on the
validation split, never on the test split. Each candidate is a resumable stage in
`runs/cpu_preset_probe/<model>_<multiplier>/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import pdjax
from pdjax.cli import presets, runs
from pdjax.steps import Schedule

CANDIDATES = ("vgg19:1/8", "vgg11:1/16", "vgg11:1/8")
# The cpu presets' teacher/scratch schedule (experiments/vgg19_to_vgg11.py).
SCHEDULE = Schedule(epochs=30, batch_size=128, lr=0.1, milestones=(9, 18, 24), lr_factor=0.2, weight_decay=5e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(CANDIDATES), metavar="MODEL:MULTIPLIER[:KEY=INT,...]",
                        help="a model, its width multiplier and model options (e.g. resnet18:1/16:stem_width=4)")
    parser.add_argument("--epochs", type=int, default=SCHEDULE.epochs)
    parser.add_argument("--milestones", default=",".join(map(str, SCHEDULE.milestones)),
                        help="comma-separated epochs at which the learning rate drops")
    parser.add_argument("--lr", type=float, default=SCHEDULE.lr)
    parser.add_argument("--data", default=presets.SHARED_CIFAR10)
    parser.add_argument("--out", default="runs/cpu_preset_probe")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs.enable_compilation_cache()
    schedule = dataclasses.replace(SCHEDULE, epochs=args.epochs, lr=args.lr,
                                   milestones=tuple(int(m) for m in args.milestones.split(",") if m))
    data = pdjax.data.load(args.data)
    rows = []
    for spec in args.models:
        name, multiplier, *rest = spec.split(":")
        options = {k: int(v) for k, v in (o.split("=") for o in rest[0].split(","))} if rest else {}
        widths = pdjax.models.scaled_widths(name, float(Fraction(multiplier)))
        stage = "_".join([name, multiplier.replace("/", "over")] + [f"{k}{v}" for k, v in options.items()])
        _, result, _ = pdjax.designs.stage.train_stage(stage, model_name=name, data=data, schedule=schedule,
                                              out=args.out, seed=args.seed, widths=widths, model_options=options)
        rows.append({"model": name, "multiplier": multiplier, "options": options,
                     "options_text": ", ".join(f"{k}={v}" for k, v in options.items()), "widths": list(widths),
                     "params": pdjax.count_params(result.best_variables["params"]),
                     "best_val_accuracy": result.val_accuracy, "best_epoch": result.best_epoch,
                     "train_seconds": round(result.train_seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
    table = pdjax.render.markdown_table(rows, [
        ("model", "model", "s"), ("multiplier", "width multiplier", "s"), ("options_text", "options", "s"),
        ("params", "params", ","),
        ("best_val_accuracy", "best val acc", ".4f"), ("best_epoch", "best epoch", "d"),
        ("train_seconds", "train s", ".1f")])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.md").write_text(
        f"# cpu preset probe (validation accuracy only)\n\nSchedule: {schedule}\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
