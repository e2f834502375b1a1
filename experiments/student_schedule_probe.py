"""How long the pruning_controls students train: validation accuracy of a student trained from
scratch and distilled from the unpruned teacher, for several schedule lengths of the same shape
(milestones at 30/60/80% of the epochs), one seed, on the shared CIFAR-10 JPEGs.

    python experiments/student_schedule_probe.py --family vgg      # VGG19/8 -> VGG11/16
    python experiments/student_schedule_probe.py --family resnet   # ResNet18/16 -> VGG16-tiny/8
    python experiments/student_schedule_probe.py --family resnet --student-width 16   # VGG16-tiny/16

A student has "finished learning" when a longer schedule no longer raises its best validation
accuracy by more than the seed-to-seed noise. Only validation accuracy is printed and written
(`results.md`, `results.json`): the schedule is chosen on the validation split, never on the
test split. Each stage is resumable in `runs/student_schedule_probe/<family>/`; the teacher is
the pruning_controls cpu preset's teacher of seed 0 (same model, schedule, seed and data).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pdjax
from pdjax.cli import presets, runs
from pdjax.steps import Schedule

# family -> (teacher, teacher width, teacher schedule, student, student width, student lr,
#            lr factor, model options)
FAMILIES = {
    "vgg": ("vgg19", 1 / 8, Schedule(epochs=30, batch_size=128, lr=0.1, milestones=(9, 18, 24), lr_factor=0.2,
                                     weight_decay=5e-4),
            "vgg11", 1 / 16, 0.1, 0.2, {}),
    "resnet": ("resnet18", presets.CPU_RESNET_WIDTH, presets.CPU_RESNET_TRAIN,
               "vgg16_tiny", 1 / 8, 0.05, 0.2, {"resnet18": {"stem_width": presets.CPU_RESNET_STEM}}),
}


def shaped(epochs: int, lr: float, factor: float) -> Schedule:
    """A student schedule of `epochs` with milestones at 30/60/80% of them."""
    milestones = tuple(sorted({max(1, round(epochs * f)) for f in (0.3, 0.6, 0.8)}))
    return Schedule(epochs=epochs, batch_size=128, lr=lr, milestones=milestones, lr_factor=factor, weight_decay=5e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(FAMILIES), default="vgg")
    parser.add_argument("--epochs", default=None, help="comma-separated schedule lengths (default per family)")
    parser.add_argument("--data", default=presets.SHARED_CIFAR10)
    parser.add_argument("--out", default="runs/student_schedule_probe")
    parser.add_argument("--student-width", type=int, default=None, metavar="N",
                        help="students 1/N wide instead of the family's width; their stages and results "
                             "get a _wN suffix, beside the default width's, with the same teacher")
    args = parser.parse_args()
    teacher_name, teacher_width, teacher_schedule, student_name, student_width, lr, factor, options = \
        FAMILIES[args.family]
    suffix = ""
    if args.student_width is not None:
        if args.student_width < 1:
            parser.error(f"--student-width takes N >= 1 (students 1/N wide), got {args.student_width}")
        student_width, suffix = 1 / args.student_width, f"_w{args.student_width}"
    lengths = [int(e) for e in (args.epochs or ("20,30,40" if args.family == "vgg" else "10,20,30")).split(",")]
    out = Path(args.out) / args.family
    data = pdjax.data.load(args.data)
    model, teacher, row = pdjax.designs.stage.train_stage(
        "teacher", model_name=teacher_name, data=data, schedule=teacher_schedule, out=out, seed=0,
        widths=pdjax.models.scaled_widths(teacher_name, teacher_width), model_options=options.get(teacher_name))
    source = pdjax.distill.Teacher(model, teacher.best_variables)
    widths = pdjax.models.scaled_widths(student_name, student_width)
    rows = [{"stage": "teacher", "epochs": teacher_schedule.epochs, "best_val_accuracy": teacher.val_accuracy,
             "best_epoch": teacher.best_epoch, "train_seconds": round(teacher.train_seconds, 1),
             "val_curve": [h["val_accuracy"] for h in teacher.history]}]
    for epochs in lengths:
        schedule = shaped(epochs, lr, factor)
        for arm, extra in (("scratch", {}), ("kd_unpruned", {"teacher": source})):
            stage = f"student{suffix}_{arm}_{epochs}ep"
            _, result, _ = pdjax.designs.stage.train_stage(stage, model_name=student_name, data=data, schedule=schedule,
                                                      out=out, seed=pdjax.designs.stage.STUDENT_SEED_OFFSET,
                                                      widths=widths, **extra)
            curve = [h["val_accuracy"] for h in result.history]
            rows.append({"stage": stage, "epochs": epochs, "milestones": list(schedule.milestones),
                         "best_val_accuracy": result.val_accuracy, "best_epoch": result.best_epoch,
                         "mean_val_last_20pct": sum(curve[-max(1, epochs // 5):]) / max(1, epochs // 5),
                         "train_seconds": round(result.train_seconds, 1), "val_curve": curve})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "val_curve"}), flush=True)
    table = pdjax.render.markdown_table(rows, [
        ("stage", "stage", "s"), ("epochs", "epochs", "d"), ("best_val_accuracy", "best val acc", ".4f"),
        ("best_epoch", "best epoch", "d"), ("mean_val_last_20pct", "mean val acc, last 20% of epochs", ".4f"),
        ("train_seconds", "train s", ".1f")])
    record = {"family": args.family, "teacher": teacher_name, "student": student_name,
              "student_width": student_width, "environment": pdjax.designs.common.environment(), "rows": rows}
    markdown = (f"# Student schedule probe: {args.family}, {student_name} at {student_width:g} width "
                f"(validation accuracy only)\n\n{table}")
    pdjax.render.write_results(out, record, markdown, stem=f"results{suffix}")
    print(table)


if __name__ == "__main__":
    runs.enable_compilation_cache()
    main()
