"""GPU check: one step against the CPU, step throughput in float32 and bfloat16, the estimated
wall time of `experiments/vgg19_to_vgg11.py --preset paper`, and the host's share of a step.
Written for one run of under 10 minutes on one H200 (not yet run on one: sections 1-3 were
sized at under 8 minutes, section 4 adds 16 compilations and 1,200 steps).

    python benchmarks/gpu_check.py                  # on the GPU machine
    python benchmarks/gpu_check.py --quick          # tiny widths and batches: a smoke run (CPU too)

1. Correctness: one VGG11 train step and one VGG19 -> VGG11 KD step on the accelerator and on
   the host CPU from the same state and batch; prints the largest differences (loss, updated
   parameters). float32 matmuls on recent NVIDIA GPUs may run in TF32 by default, so agreement
   is expected to about 1e-3 relative, not 1e-6.
2. Throughput: images/s of VGG19 and VGG11 train steps and of the VGG19 -> VGG11 KD step, in
   float32 and bfloat16 compute, at batch 128 and 512, with the FLOP/s XLA counts for each step
   as a fraction of a bfloat16 (and float32) matmul peak measured in the same run.
3. The paper preset's wall time from those rates: teacher 200 epochs + 7 pruning rounds x 130
   epochs of VGG19, VGG11 from scratch 200 epochs, 4 KD students x 200 epochs, on 45,000
   training images, plus a validation pass (5,000 images) per epoch.
4. Host overhead and step time together, through `pdjax.fit` itself (the paths of
   `benchmarks/host_overhead.py`: host batches, the data on the device one step a call, 10 and
   50 steps a call): the main thread's CPU per step beside the wall time per step. Where the
   first is close to the second, the host bounds the step and the accelerator waits on Python.
"""

from __future__ import annotations

import argparse
import time

from _common import PdjaxSetup, environment, jax_matmul_peak, table

import jax
import jax.numpy as jnp
import numpy as np

from pdjax import models, paper, parallel

import host_overhead


def correctness(widths_scale: float, batch: int) -> list[dict]:
    """One train step and one KD step on the default device vs the CPU."""
    rows = []
    cpu = jax.devices("cpu")[:1]
    for kind in ("train", "kd"):
        results = {}
        for platform, devices in (("accelerator", jax.devices()[:1]), ("cpu", cpu)):
            with jax.default_device(devices[0]):
                student = PdjaxSetup.create("vgg11", batch, widths=models.scaled_widths("vgg11", widths_scale),
                                            devices=devices)
                extra = ()
                teacher_model = None
                if kind == "kd":
                    teacher = PdjaxSetup.create("vgg19", batch, seed=1, devices=devices,
                                                widths=models.scaled_widths("vgg19", widths_scale))
                    teacher_model = teacher.model
                    extra = (parallel.replicate(teacher.variables, student.mesh),)
                step = student.train_step(teacher=teacher_model)
                state, metrics = step(student.state(), student.images, student.labels, student.key, *extra)
                results[platform] = jax.device_get((metrics["loss"], state.params))
        (loss_a, params_a), (loss_c, params_c) = results["accelerator"], results["cpu"]
        diffs = [float(np.max(np.abs(a - c)) / (np.max(np.abs(c)) + 1e-12))
                 for a, c in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_c))]
        rows.append({"step": kind, "loss accelerator": f"{float(loss_a):.6f}",
                     "loss cpu": f"{float(loss_c):.6f}",
                     "max relative param diff": f"{max(diffs):.2e}",
                     "ok (< 1e-2)": "yes" if max(diffs) < 1e-2 and abs(loss_a - loss_c) < 1e-2 * abs(loss_c) else "NO"})
    return rows


def throughput(batches, dtypes, widths_scale: float, repeats: int, peaks: dict) -> tuple[list[dict], dict]:
    rows, rates = [], {}
    for dtype in dtypes:
        for batch in batches:
            setups = {name: PdjaxSetup.create(name, batch, dtype=dtype,
                                              widths=models.scaled_widths(name, widths_scale))
                      for name in ("vgg19", "vgg11")}
            timed = {}
            for name, s in setups.items():
                timed[f"{name} train"] = s.time_train(s.train_step(), s.state(), repeats=repeats)
                timed[f"{name} eval"] = s.time_eval(repeats=repeats)
            student, teacher = setups["vgg11"], setups["vgg19"]
            timed["vgg19 -> vgg11 kd"] = student.time_train(
                student.train_step(teacher=teacher.model), student.state(),
                parallel.replicate(teacher.variables, student.mesh), repeats=repeats)
            for label, (seconds, flops) in timed.items():
                rates[(dtype, batch, label)] = batch / seconds
                rows.append({"dtype": dtype, "batch": batch, "step": label,
                             "images/s": f"{batch / seconds:,.0f}", "ms/step": f"{seconds * 1e3:.1f}",
                             "TFLOP/s": f"{flops / seconds / 1e12:.1f}",
                             "% of bf16 peak": f"{100 * flops / seconds / peaks['bfloat16']:.1f}%",
                             "% of f32 peak": f"{100 * flops / seconds / peaks['float32']:.1f}%"})
            print(rows[-1], flush=True)
    return rows, rates


def paper_estimate(rates: dict, dtype: str, batch: int) -> dict:
    train_images, val_images = 45_000, 5_000
    train, prune, kd = paper.CIFAR_TRAIN, paper.CIFAR_PRUNE, paper.CIFAR_KD
    teacher_epochs = train.epochs + 7 * prune.epochs
    r = lambda label: rates[(dtype, batch, label)]
    seconds = {
        "teacher + 7 pruning rounds (vgg19)": teacher_epochs * (train_images / r("vgg19 train") + val_images / r("vgg19 eval")),
        "vgg11 from scratch": train.epochs * (train_images / r("vgg11 train") + val_images / r("vgg11 eval")),
        "4 KD students": 4 * kd.epochs * (train_images / r("vgg19 -> vgg11 kd") + val_images / r("vgg11 eval")),
    }
    total = sum(seconds.values())
    return {"dtype": dtype, "batch": batch,
            **{k: f"{v / 60:.0f} min" for k, v in seconds.items()},
            "total": f"{total / 3600:.2f} h", "under 1 h": "yes" if total < 3600 else "no"}


def host_bound(widths_scale: float, batch: int, steps: int, epochs: int) -> list[dict]:
    """Main-thread CPU and wall time per step of `fit` (train and KD) on each feeding path."""
    paths = [(name, options) for name, options in host_overhead.PATHS
             if options.get("steps_per_dispatch", 1) <= steps]
    rows = []
    for r in host_overhead.measure_paths(widths_scale, batch, steps, epochs, paths):
        wall_ms = 1e3 * r["epoch_s"] / steps
        rows.append({"step": r["step"], "path": r["path"], "host CPU ms/step": f"{r['cpu_ms']:.3f}",
                     "wall ms/step": f"{wall_ms:.3f}", "host share": f"{r['cpu_ms'] / wall_ms:.0%}",
                     "images/s": f"{r['img_s']:,.0f}"})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny widths and batches (smoke run)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    scale, batches, n = (1 / 16, (16, 32), 256) if args.quick else (1.0, (128, 512), 8192)
    start = time.time()
    print(f"Environment: {environment()}", flush=True)
    peaks = {"float32": jax_matmul_peak(n, jnp.float32, repeats=10),
             "bfloat16": jax_matmul_peak(n, jnp.bfloat16, repeats=10)}
    print(f"matmul peaks ({n}^3): f32 {peaks['float32'] / 1e12:.1f} TFLOP/s, "
          f"bf16 {peaks['bfloat16'] / 1e12:.1f} TFLOP/s", flush=True)
    text = table(correctness(scale, batches[0]), "One step: accelerator vs CPU (float32)")
    print(text, flush=True)
    rows, rates = throughput(batches, ("float32", "bfloat16"), scale, 3 if args.quick else args.repeats, peaks)
    text += table(rows, "Step throughput")
    estimates = [paper_estimate(rates, d, b) for d in ("float32", "bfloat16") for b in batches]
    text += table(estimates, "Estimated wall time of vgg19_to_vgg11 --preset paper (from the rates above)")
    steps, epochs = (10, 2) if args.quick else (50, 3)
    text += table(host_bound(scale, batches[0], steps, epochs),
                  f"Host overhead and step time through fit (batch {batches[0]}, {steps} steps an epoch, "
                  f"medians over {epochs - 1} epochs after the first)")
    if args.quick:
        text += "\n(--quick: tiny widths, so the estimate is not the paper's.)\n"
    print(text)
    print(f"gpu_check took {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
