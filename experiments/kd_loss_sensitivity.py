"""Does the controls' answer depend on the distillation loss? Students of a finished controls run's
teachers, distilled with Decoupled KD and DIST (each at its paper's CIFAR settings) and trained
teacher-free, paired by seed with that run's vanilla-KD students (issue 37).

    python experiments/kd_loss_sensitivity.py --controls runs/pc_v2_t0 runs/pc_v2_t1 \\
        --preset cpu_v2 --teachers 0,1 --seeds 0,1 --out runs/kd_loss_sensitivity/vgg

`--controls` takes one finished run or several parts of one run (the same config but for
`teacher_seeds`, as `pruning_controls.py --pool` takes them). For each teacher seed of `--teachers`
(its stages loaded from the part that trained it, without training:
`teacher_seed<t>/teacher`, `.../magnitude/round_<k>`, `.../dense/round_<k>` at the last distilled
round k) and each student seed: a student of the unpruned, magnitude and dense teachers under each
loss of `--losses` (default dkd, dist), and one teacher-free student per seed. Every student is the
controls run's (`--preset` of experiments/pruning_controls.py with the same `--set`s: its student,
schedule, student data and seeds), so a student here and there differ only in the loss. The report
gives, per loss, magnitude - dense and magnitude - unpruned per teacher and seed and pooled
(`pdjax.stats.nested`), beside the same contrasts of the run's vanilla-KD students, and each
arm's mean test accuracy; results.md and results.json in `--out`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pdjax  # noqa: E402
import pruning_controls  # noqa: E402
from pdjax.cli import config as config_lib  # noqa: E402
from pdjax.cli import runs  # noqa: E402
from pdjax.designs.stage import STUDENT_SEED_OFFSET, Stages  # noqa: E402

ARMS = ("unpruned", "magnitude", "dense")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--controls", required=True, type=Path, nargs="+",
                        help="a finished pruning_controls run directory, or the parts of one run")
    parser.add_argument("--preset", default="cpu_v2", help="that run's preset (default cpu_v2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="that run's --set overrides")
    parser.add_argument("--teachers", default="0,1", help="teacher seeds (default 0,1)")
    parser.add_argument("--seeds", default="0,1", help="student seeds (default 0,1)")
    parser.add_argument("--losses", default="dkd,dist", help="losses with a teacher (default dkd,dist)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.preset not in pruning_controls.PRESETS:
        parser.error(f"--preset {args.preset}: use one of {', '.join(pruning_controls.PRESETS)}")
    config = config_lib.override(pruning_controls.PRESETS[args.preset](), args.overrides)
    teachers = [int(t) for t in args.teachers.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    losses = [loss for loss in args.losses.split(",") if loss]
    for loss in losses:
        if loss not in pdjax.distill.LOSSES or loss == "teacher_free":
            parser.error(f"--losses {loss}: use losses with a teacher among {', '.join(pdjax.distill.LOSSES)}")
    parts = pdjax.designs.controls.load_parts(args.controls, {"experiment": "pruning_controls", "config":
                                                              pdjax.designs.common.to_dict(config)},
                                              vary=("teacher_seeds",))
    try:
        owner = pdjax.designs.controls.teacher_owners(parts, [str(c) for c in args.controls])
    except ValueError as err:
        parser.error(f"--controls: {err}")
    for t in teachers:
        if t not in owner:
            parser.error(f"--teachers {t}: no part of --controls trained it (they have "
                         f"{', '.join(map(str, sorted(owner)))})")
    k = max(config.rounds)
    data = pdjax.designs.common.load_data(config, "data")
    stages = Stages(config, data, args.out)
    spec = config.student
    students = []

    def student(name: str, arm: str, teacher_seed: int | None, seed: int, loss: str, source: Any) -> None:
        kd = pdjax.distill.KDSpec.for_loss(loss)
        _, fitted, _ = stages.train(name, spec.name, spec.widths, config.student_distill, STUDENT_SEED_OFFSET + seed,
                                    model_options=spec.options(), data=stages.student_data, kd=kd,
                                    **({} if source is None else {"teacher": source}))
        students.append({"stage": name, "arm": arm, "teacher_seed": teacher_seed, "seed": seed, "loss": loss,
                         "test_accuracy": fitted.test_accuracy, "val_accuracy": fitted.val_accuracy})

    for seed in seeds:
        student(f"student_teacher_free_seed{seed}", "teacher_free", None, seed, "teacher_free", None)
    for t in teachers:
        paths = {"unpruned": f"teacher_seed{t}/teacher", "magnitude": f"teacher_seed{t}/magnitude/round_{k:02d}",
                 "dense": f"teacher_seed{t}/dense/round_{k:02d}"}
        sources = {}
        for arm, path in paths.items():
            stage = pdjax.artifacts.load_stage(args.controls[owner[t]] / path)
            sources[arm] = pdjax.distill.Teacher(stage.module, stage.variables, stage.masks)
        for seed in seeds:
            for loss in losses:
                for arm in ARMS:
                    student(f"teacher_seed{t}/student_{arm}_{loss}_seed{seed}", arm, t, seed, loss, sources[arm])
    # The run's vanilla-KD students of the same teachers and seeds.
    for s in (s for part in parts for s in part["students"]):
        if s["teacher_seed"] in teachers and s["seed"] in seeds and s["arm"] in ARMS and s["round"] in (None, k):
            students.append({"stage": s["stage"], "arm": s["arm"], "teacher_seed": s["teacher_seed"], "seed": s["seed"],
                             "loss": "kd (the run's)", "test_accuracy": s["test_accuracy"],
                             "val_accuracy": s["val_accuracy"]})
    rows = []
    for loss in ["kd (the run's)", *losses]:
        for a, b in (("magnitude", "dense"), ("magnitude", "unpruned"), ("dense", "unpruned")):
            accuracy = {(s["arm"], s["teacher_seed"], s["seed"]): s["test_accuracy"] for s in students
                        if s["loss"] == loss}
            differences = [[accuracy[(a, t, s)] - accuracy[(b, t, s)] for s in seeds
                            if (a, t, s) in accuracy and (b, t, s) in accuracy] for t in teachers]
            if not any(differences):
                continue
            c = pdjax.stats.nested(differences)
            rows.append({"loss": loss, "contrast": f"{a} - {b}", "mean_pts": 100 * c.mean,
                         "ci": "" if c.low is None else f"{100 * c.low:+.2f} to {100 * c.high:+.2f}",
                         "per_teacher": ", ".join(f"{100 * m:+.2f}" for m in c.teacher_means),
                         "teachers": c.teachers, "seeds": c.seeds})
    arms = []
    for (loss, arm) in dict.fromkeys((s["loss"], s["arm"]) for s in students):
        accs = [s["test_accuracy"] for s in students if (s["loss"], s["arm"]) == (loss, arm)]
        arms.append({"loss": loss, "arm": arm, "students": len(accs), "mean": statistics.fmean(accs)})
    table = pdjax.render.markdown_table(rows, [
        ("loss", "loss", "s"), ("contrast", "contrast (student test acc)", "s"), ("mean_pts", "mean, points", "+.2f"),
        ("ci", "95% interval", "s"), ("per_teacher", "per teacher", "s"), ("teachers", "teachers", "d"),
        ("seeds", "seeds", "d")])
    arm_table = pdjax.render.markdown_table(arms, [("loss", "loss", "s"), ("arm", "arm", "s"),
                                                   ("students", "students", "d"), ("mean", "test acc", ".4f")])
    command = "python experiments/kd_loss_sensitivity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    runs_named = ", ".join(f"`{c}`" for c in args.controls)
    markdown = (f"# Does the answer depend on the distillation loss?\n\n    {command}\n\nStudents of the controls "
                f"run {runs_named} (teacher seeds {', '.join(map(str, teachers))}, round {k}), each loss at its "
                f"paper's CIFAR settings (`pdjax.distill.KDSpec.for_loss`), paired by seed with the run's vanilla-KD "
                f"students.\n\n{table}\n## Arms\n\n{arm_table}\n{pdjax.designs.common.machine_note(pdjax.designs.common.environment())}\n")
    record = {"command": command, "controls": [str(c) for c in args.controls], "teachers": teachers, "seeds": seeds,
              "losses": losses, "round": k, "students": students, "contrasts": rows, "rows": stages.rows,
              "environment": pdjax.designs.common.environment()}
    pdjax.render.write_results(args.out, record, markdown)
    print(markdown)
    return record


if __name__ == "__main__":
    runs.run_cli(main, sys.argv[1:])
