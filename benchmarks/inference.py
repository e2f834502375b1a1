"""Is the student actually faster? The exported student against the teacher it was distilled
from (masked: pruned weights are zeros in dense kernels, so it computes as much as unpruned),
at batch 1 and 256 on the CPU, side by side in one run.

    python benchmarks/inference.py                      # VGG19 -> its 79% chain student, CIFAR shapes
    python benchmarks/inference.py --model resnet18 --sparsity 0.59

The teacher is the paper-width model (or --width), pruned by global magnitude to --sparsity on
fresh weights (speed does not depend on the values), the student is derived from its masks by
the paper's chain rule (`pdjax.students.student_widths`). Each is exported as a user gets it
(`pdjax.artifacts.export`: uint8 images in, normalisation inside, masks folded) and run through
`jax.export.deserialize(...).call`; with the `onnx` extra also through onnxruntime. Every
model and runtime is timed interleaved, best of N rounds (`pdjax.costs.throughput`). Run it
alone: another process on the cores moves every number.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from pdjax import artifacts, costs, masks as masks_lib, models, render, students  # noqa: E402
from pdjax.designs import common  # noqa: E402

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 100


def stage(model: str, widths: tuple[int, ...], variables, masks, path: Path) -> artifacts.Stage:
    module = models.get(model, NUM_CLASSES, widths=widths)
    record = {"model": {"image_shape": list(IMAGE_SHAPE), "classes": [str(i) for i in range(NUM_CLASSES)],
                        "normalization": {"source": "CIFAR-100", "mean": [0.507, 0.487, 0.441],
                                          "std": [0.267, 0.256, 0.276]}}}
    return artifacts.Stage(path, module, variables, masks, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vgg19")
    parser.add_argument("--width", type=float, default=1.0, help="the teacher's width multiplier")
    parser.add_argument("--sparsity", type=float, default=0.79)
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    teacher_widths = models.scaled_widths(args.model, args.width)
    teacher = models.get(args.model, NUM_CLASSES, widths=teacher_widths)
    variables = jax.device_get(models.init(teacher, jax.random.key(0), IMAGE_SHAPE))
    masks = masks_lib.init(variables["params"])
    while 1 - masks_lib.density(masks) < args.sparsity - 1e-9:
        masks = masks_lib.prune_global(variables["params"], masks, 0.2)
    student_widths = students.student_widths(args.model, masks, "chain", image_shape=IMAGE_SHAPE)
    student = models.get(args.model, NUM_CLASSES, widths=student_widths)
    student_variables = jax.device_get(models.init(student, jax.random.key(1), IMAGE_SHAPE))
    flops = {"teacher": costs.flops_per_image(teacher, variables, IMAGE_SHAPE),
             "student": costs.flops_per_image(student, student_variables, IMAGE_SHAPE)}
    nonzero = {"teacher": masks_lib.remaining(masks), "student": models.count_params(student_variables["params"],
                                                                                    prunable_only=True)}

    forwards = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (widths, v, m) in {"teacher": (teacher_widths, variables, masks),
                                     "student": (student_widths, student_variables, None)}.items():
            s = stage(args.model, widths, v, m, Path(tmp) / name)
            out = artifacts.export(s, Path(tmp) / name, platforms=("cpu",))
            exported = jax.export.deserialize((out / artifacts.EXPORT_FILE).read_bytes())
            forwards[(name, "jax.export")] = jax.jit(exported.call)  # as a server would: traced once
            try:
                import onnxruntime as ort

                session = ort.InferenceSession(str(artifacts.export_onnx(s, Path(tmp) / name)))
                input_name = session.get_inputs()[0].name
                forwards[(name, "onnxruntime")] = lambda x, session=session, n=input_name: session.run(None, {n: x})
            except ImportError:
                pass
        rows = []
        for batch in (int(b) for b in args.batches.split(",")):
            images = np.random.default_rng(0).integers(0, 256, (batch, *IMAGE_SHAPE), dtype=np.uint8)
            speeds = costs.throughput({k: v for k, v in forwards.items()}, images, repeats=args.repeats)
            for (name, runtime), speed in speeds.items():
                rows.append({"batch": batch, "model": name, "runtime": runtime, "images_per_second": speed,
                             "speedup": speed / speeds[("teacher", runtime)], "flops": flops[name],
                             "flops_ratio": flops["teacher"] / flops[name], "nonzero": nonzero[name]})
    print(common.machine_note(common.environment()))
    print(f"\n{args.model} x{args.width:g} teacher pruned to {1 - masks_lib.density(masks):.0%} (masked, dense compute) "
          f"and its chain-rule student {list(student_widths)}; uint8 {IMAGE_SHAPE} images, interleaved, "
          f"best of {args.repeats}.\n")
    print(render.markdown_table(rows, [
        ("batch", "batch", "d"), ("model", "model", "s"), ("runtime", "runtime", "s"),
        ("nonzero", "nonzero conv/linear weights", ","), ("flops", "FLOPs / image", ",.0f"),
        ("images_per_second", "images/s", ",.0f"), ("speedup", "speed-up over the teacher", ".2f"),
        ("flops_ratio", "teacher / model FLOPs", ".2f")]))


if __name__ == "__main__":
    main()
