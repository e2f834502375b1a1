"""What masks, the teacher and the input path add to a pdjax train step.

    python benchmarks/overheads.py                  # VGG19 -> VGG11 at batch 128
    python benchmarks/overheads.py --batch 512 --teacher vgg19 --student vgg11

Three comparisons, each timed in this one process (median of `--repeats` after a compiling
warm-up):
  - masked vs unmasked train step (the teacher at 79% sparsity, i.e. 7 rounds of 20%);
  - KD step vs (student train step + teacher eval-mode forward) timed separately;
  - fit()'s input path (epoch sampling on the host, transfer to devices) in front of the step
    vs the step on one pre-staged batch.
"""

from __future__ import annotations

import argparse
import time

from _common import (IMAGE_SHAPE, MEAN, STD, PdjaxSetup, environment, median_seconds,
                     random_masks, table)

import jax
import numpy as np

from pdjax import data as data_lib
from pdjax import parallel, steps


def masked_vs_dense(setup: PdjaxSetup, repeats: int) -> dict:
    dense, _ = setup.time_train(setup.train_step(), setup.state(), repeats=repeats)
    masks = random_masks(setup.variables["params"], density=0.8**7)
    masked, _ = setup.time_train(setup.train_step(), setup.state(masks), repeats=repeats)
    return {"comparison": f"{setup.name}: masked (79% sparse) / dense train step",
            "baseline ms": f"{dense * 1e3:.0f}", "measured ms": f"{masked * 1e3:.0f}",
            "ratio": f"{masked / dense:.3f}", "target": "<= 1.05"}


def kd_vs_parts(student: PdjaxSetup, teacher: PdjaxSetup, repeats: int) -> dict:
    teacher_variables = parallel.replicate(teacher.variables, student.mesh)
    kd, _ = student.time_train(student.train_step(teacher=teacher.model), student.state(),
                               teacher_variables, repeats=repeats)
    plain, _ = student.time_train(student.train_step(), student.state(), repeats=repeats)
    forward = jax.jit(lambda v, x: teacher.model.apply(
        v, steps.prepare_images(x, None, mean=MEAN, std=STD, augment=False), train=False))
    images = student.images
    teacher_fwd = median_seconds(lambda: forward(teacher_variables, images).block_until_ready(),
                                 repeats=repeats)
    return {"comparison": f"KD step {teacher.name} -> {student.name} / (student step + teacher forward)",
            "baseline ms": f"{(plain + teacher_fwd) * 1e3:.0f} ({plain * 1e3:.0f} + {teacher_fwd * 1e3:.0f})",
            "measured ms": f"{kd * 1e3:.0f}", "ratio": f"{kd / (plain + teacher_fwd):.3f}",
            "target": "<= 1.1"}


def input_path(setup: PdjaxSetup, steps: int) -> dict:
    """fit()'s loop: train_batches (host sampling) + put_global_batch (transfer) + step."""
    batch = len(setup.labels)
    rng = np.random.default_rng(0)
    n = batch * (steps + 2)
    split = data_lib.Split(rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8),
                           rng.integers(0, 100, (n,), dtype=np.int32))
    step = setup.train_step()

    def run(feed) -> float:
        state = setup.state()
        state, metrics = step(state, setup.images, setup.labels, setup.key)  # compile
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for images, labels in feed():
            state, metrics = step(state, images, labels, setup.key)
        jax.block_until_ready((state, metrics))
        return (time.perf_counter() - start) / steps

    def real():
        batches = data_lib.train_batches(split, batch, seed=0, epoch=0)
        for _, b in zip(range(steps), batches):
            yield parallel.put_global_batch(b, setup.mesh)

    def staged():
        for _ in range(steps):
            yield setup.images, setup.labels

    with_input, without = run(real), run(staged)
    return {"comparison": f"{setup.name}: step with fit()'s input path / pre-staged batch",
            "baseline ms": f"{without * 1e3:.0f}", "measured ms": f"{with_input * 1e3:.0f}",
            "ratio": f"{with_input / without:.3f}", "target": "<= 1.05"}


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="vgg19")
    parser.add_argument("--student", default="vgg11")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--input-steps", type=int, default=8)
    args = parser.parse_args(argv)
    teacher = PdjaxSetup.create(args.teacher, args.batch)
    student = PdjaxSetup.create(args.student, args.batch, seed=1)
    rows = [masked_vs_dense(teacher, args.repeats), kd_vs_parts(student, teacher, args.repeats),
            input_path(student, args.input_steps)]
    text = f"Environment: {environment()}, batch {args.batch}\n" + table(rows, "Overheads")
    print(text)
    return text


if __name__ == "__main__":
    main()
