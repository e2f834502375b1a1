"""Train, eval and KD step throughput: pdjax beside PyTorch, same models, optimizer and loss.

    python benchmarks/steps.py                       # VGG19, VGG11, ResNet18 at batch 128 and 512
    python benchmarks/steps.py --models vgg11 --batches 128 --no-torch

For each model and batch size it times one jitted pdjax step (median of `--repeats` after a
compiling warm-up) and the equivalent PyTorch step, and prints images/s, their ratio, and the
FLOP/s pdjax achieves (XLA's FLOP count of the step) against an f32 matmul peak measured in the
same run. The KD step distils into the model from a teacher: VGG19 for VGG11 (the paper's main
pair), the model itself otherwise. PyTorch uses all cores (`torch.get_num_threads()`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import (PdjaxSetup, environment, jax_matmul_peak, median_seconds, table)

from pdjax import parallel

KD_TEACHER = {"vgg11": "vgg19"}


def pdjax_rates(name: str, batch: int, repeats: int) -> dict[str, tuple[float, float]]:
    """{'train'|'eval'|'kd': (seconds per step, FLOPs per step)}."""
    setup = PdjaxSetup.create(name, batch)
    out = {"train": setup.time_train(setup.train_step(), setup.state(), repeats=repeats),
           "eval": setup.time_eval(repeats=repeats)}
    teacher = PdjaxSetup.create(KD_TEACHER.get(name, name), batch, seed=1)
    teacher_variables = parallel.replicate(teacher.variables, setup.mesh)
    out["kd"] = setup.time_train(setup.train_step(teacher=teacher.model), setup.state(),
                                 teacher_variables, repeats=repeats)
    return out


def torch_rates(name: str, batch: int, repeats: int) -> dict[str, float]:
    from torch_reference import TorchSetup
    student = TorchSetup(name, batch)
    teacher = TorchSetup(KD_TEACHER.get(name, name), batch, seed=1)
    return {"train": median_seconds(student.train_step, repeats=repeats),
            "eval": median_seconds(student.eval_step, repeats=repeats),
            "kd": median_seconds(lambda: student.train_step(teacher), repeats=repeats)}


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg19,vgg11,resnet18")
    parser.add_argument("--batches", default="128,512")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="pdjax only")
    parser.add_argument("--steps", default="train,eval,kd", help="which steps to report")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    use_torch = not args.no_torch
    if use_torch:
        import torch
    peak = jax_matmul_peak()
    lines = [f"Environment: {environment()}" + (f", torch {torch.__version__} "
                                                f"({torch.get_num_threads()} threads)" if use_torch else ""),
             f"f32 matmul peak (2048^3, XLA): {peak / 1e9:.0f} GFLOP/s"]
    rows = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            ours = pdjax_rates(name, batch, args.repeats)
            theirs = torch_rates(name, batch, args.repeats) if use_torch else {}
            for kind, (seconds, flops) in ours.items():
                if kind not in args.steps.split(","):
                    continue
                label = kind if kind != "kd" else f"kd (teacher {KD_TEACHER.get(name, name)})"
                row = {"model": name, "batch": batch, "step": label,
                       "pdjax img/s": f"{batch / seconds:,.0f}"}
                if use_torch:
                    row["PyTorch img/s"] = f"{batch / theirs[kind]:,.0f}"
                    row["pdjax / PyTorch"] = f"{theirs[kind] / seconds:.2f}x"
                row["pdjax GFLOP/s"] = f"{flops / seconds / 1e9:,.0f}"
                row["% of matmul peak"] = f"{100 * flops / seconds / peak:.0f}%"
                rows.append(row)
                print(row, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    text = "\n".join(lines) + "\n" + table(rows, "Step throughput (images/s, median)")
    print(text)
    return text


if __name__ == "__main__":
    main()
