"""How much host CPU a training step costs, and whether data on the devices and several steps a
call remove it: `pdjax.train.fit` on the same model and synthetic batches, side by side in one
run, for

  host        batches sent from the host each step (`data_on_device=False`: the path of 0c54d79)
  device K=1  the training split on the devices, one step a call (`data_on_device=True`)
  device K=10, K=50   several steps a call (`steps_per_dispatch`)

each for a train step (VGG11) and a KD step (VGG19 teacher -> VGG11). Main-thread CPU per step is
`time.thread_time()` of the thread that runs `fit` over whole epochs after the first (the XLA
computation runs on its own threads, so this is what the host spends to keep the device fed);
epoch seconds are the wall time of those epochs. Targets (issue 38): under 0.1 ms a step at
K >= 10, under 0.5 ms at K = 1.

    python benchmarks/host_overhead.py                 # VGG11 at 1/16 width, 100 steps an epoch
    python benchmarks/host_overhead.py --width 64      # 1/64 width: the host's share is larger
    python benchmarks/host_overhead.py --quick         # a smoke run (tiny, 2 epochs)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import pdjax  # noqa: E402
from pdjax import distill, models  # noqa: E402
from pdjax.data import ImageData, Split  # noqa: E402
from pdjax.designs import common  # noqa: E402

PATHS = [("host", dict(data_on_device=False)), ("device K=1", dict(data_on_device=True)),
         ("device K=10", dict(data_on_device=True, steps_per_dispatch=10)),
         ("device K=50", dict(data_on_device=True, steps_per_dispatch=50))]


def synthetic(steps: int, batch: int, classes: int = 100) -> ImageData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (steps * batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, steps * batch).astype(np.int32)
    test = Split(images[:batch], labels[:batch])
    empty = Split(images[:0], labels[:0])  # no validation pass: the epochs time training alone
    return ImageData("synthetic", Split(images, labels), empty, test, tuple(map(str, range(classes))),
                     (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def measure(model, data, schedule, teacher, options, epochs):
    """Main-thread CPU seconds and wall seconds of each epoch after the first."""
    marks = []

    def mark(epoch, record):
        marks.append((time.thread_time(), time.perf_counter()))

    marks.append((time.thread_time(), time.perf_counter()))
    pdjax.fit(model, data, schedule, seed=0, progress=False, teacher=teacher, on_epoch_end=mark,
              kd=distill.KDSpec(), **options)
    cpu = [b[0] - a[0] for a, b in zip(marks[1:-1], marks[2:])]
    wall = [b[1] - a[1] for a, b in zip(marks[1:-1], marks[2:])]
    return cpu, wall


def measure_paths(widths_scale: float, batch: int, steps: int, epochs: int,
                  paths: list[tuple[str, dict]]) -> list[dict]:
    """For a train step (VGG11) and a KD step (VGG19 -> VGG11), both at `widths_scale`, on each
    of `paths`: main-thread CPU ms per step, epoch seconds and images/s (medians over the epochs
    after the first), a row each, printed as it comes."""
    data = synthetic(steps, batch)
    student = models.get("vgg11", 100, widths=models.scaled_widths("vgg11", widths_scale))
    teacher_model = models.get("vgg19", 100, widths=models.scaled_widths("vgg19", widths_scale))
    teacher = distill.Teacher(teacher_model, models.init(teacher_model, jax.random.key(1), (32, 32, 3)))
    schedule = pdjax.Schedule(epochs=epochs, batch_size=batch, lr=0.01, weight_decay=5e-4)
    rows = []
    for kind, source in (("train", None), ("KD", teacher)):
        for name, options in paths:
            cpu, wall = measure(student, data, schedule, source, options, epochs)
            rows.append({"step": kind, "path": name, "epochs": len(cpu),
                         "cpu_ms": 1000 * statistics.median(cpu) / steps,
                         "epoch_s": statistics.median(wall), "img_s": steps * batch / statistics.median(wall)})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=16, help="models 1/N wide (default 16)")
    parser.add_argument("--steps", type=int, default=100, help="steps an epoch (default 100)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs a path (the first, compiling, not counted)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.width, args.steps, args.epochs = 64, 20, 2
    batch = 128
    paths = [(name, options) for name, options in PATHS
             if not (args.quick and options.get("steps_per_dispatch", 1) > args.steps)]
    rows = measure_paths(1 / args.width, batch, args.steps, args.epochs, paths)
    print(f"\nVGG11 at 1/{args.width} width (KD: from VGG19 at 1/{args.width}), batch {batch}, {args.steps} steps an "
          f"epoch, medians over {args.epochs - 1} epochs after the first; {jax.device_count()} x "
          f"{jax.devices()[0].device_kind}\n")
    print(pdjax.render.markdown_table(rows, [
        ("step", "step", "s"), ("path", "path", "s"), ("cpu_ms", "main-thread CPU per step, ms", ".3f"),
        ("epoch_s", "epoch, s", ".2f"), ("img_s", "images/s", ",.0f")]))
    print(common.machine_note(common.environment()))


if __name__ == "__main__":
    main()
