"""Where does distillation work? KD from the unpruned teacher against training from scratch,
on validation accuracy only, over the levers the distillation literature names: the student's
width (the teacher/student gap), the number of labelled images the student trains on, the
student's schedule length ("patient" teaching) and the KD loss's T and alpha.

    python experiments/kd_regime_probe.py --family vgg       # VGG19/8 teacher, VGG11 students
    python experiments/kd_regime_probe.py --family resnet    # ResNet18/16 teacher, VGG16-tiny students
    python experiments/kd_regime_probe.py --family vgg --cells w16_n5000_e60,w32_n5000_e60   # some cells
    python experiments/kd_regime_probe.py --family demo      # the digits, tiny widths: a minute

The teacher is the pruning_controls `cpu` (or `cpu_resnet`) preset's teacher of seed 0, trained
on the whole training split (18,000 of the shared CIFAR-10 JPEGs after the 10% validation
hold-out). A cell `w<N>_n<size>_e<epochs>` trains students 1/N wide on a class-balanced subset
of `size` training images (`pdjax.data.train_subset`, seed 0: the same images for every student;
`all`: the whole split) for `epochs` epochs (milestones at 30/60/80%): for every seed one student
from scratch and one distilled at each (T, alpha) of `--kd`, paired by seed (same initialisation
and data order). Validation and test splits are the teacher's, and only validation accuracy is
read: each cell reports KD - scratch (best validation accuracy) with a 95% paired t-interval
over the seeds, and the minutes a student took on this machine.

How a setting is chosen (written before the probe ran, kept in the report): among the cells
whose KD - scratch is >= 2 points with the interval's lower end above 0, the one with the
largest lower end whose KD student costs at most `--max-kd-minutes` (the controls' budget);
if none reaches it, the cell of largest mean KD - scratch, said so.

Every stage is resumable in `--out` (default runs/kd_regime_probe/<family>); results.md and
results.json are rewritten after every student, so a partial run has its table. A machine that
loses its run directory (a new session) goes on from what was committed:

    python experiments/kd_regime_probe.py --family vgg \
        --teacher-from results/kd_regime_probe/vgg/teacher --reuse results/kd_regime_probe/vgg/results.json

`--teacher-from` evaluates a saved teacher (a stage directory or a `pdjax.checkpoints.save_tree`
tree) instead of training it; `--reuse` takes the students a previous results.json of the same
teacher records (same cell, arm and seed) instead of training them again, and refuses a
results.json whose teacher's validation accuracy differs from this run's. Commit the teacher's
stage directory (its `best_variables`), not only the results: trained again on a CPU of other
features, the teacher is another one (XLA:CPU compiles for the machine, and the floats drift
apart over an epoch), so each student records the CPU flags digest it trained on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pdjax  # noqa: E402
import pruning_controls  # noqa: E402  (the controls presets' teachers)
from pdjax.cli import runs  # noqa: E402
from pdjax.distill import KDSpec  # noqa: E402
from pdjax.steps import Schedule  # noqa: E402

SUBSET_SEED = 0


@dataclasses.dataclass(frozen=True)
class Cell:
    width: int  # students 1/width wide
    size: int | None  # training images; None: the whole split
    epochs: int

    @property
    def name(self) -> str:
        return f"w{self.width}_n{'all' if self.size is None else self.size}_e{self.epochs}"

    @classmethod
    def parse(cls, text: str) -> "Cell":
        m = re.fullmatch(r"w(\d+)_n(all|\d+)_e(\d+)", text)
        if not m:
            raise ValueError(f"cell {text!r}: write w<N>_n<size|all>_e<epochs>, e.g. w16_n5000_e60")
        width, size, epochs = int(m[1]), None if m[2] == "all" else int(m[2]), int(m[3])
        if width < 1 or epochs < 1 or (size is not None and size < 1):
            raise ValueError(f"cell {text!r}: width, size and epochs must be >= 1")
        return cls(width, size, epochs)


# Per family: the student, its learning rate, the default cells in the order they run (the
# labelled-image lever first: it is the cheapest and, by the literature, the strongest), and
# the cost ceiling of a KD student in minutes (the controls' budget, issue 35).
FAMILIES = {
    "vgg": dict(preset=pruning_controls.cpu, student="vgg11", lr=0.1, max_kd_minutes=6.0,
                cells=("w16_n5000_e60", "w32_n5000_e60", "w16_n5000_e100", "w16_n5000_e30",
                       "w32_nall_e30", "w16_nall_e30")),
    "resnet": dict(preset=pruning_controls.cpu_resnet, student="vgg16_tiny", lr=0.05, max_kd_minutes=7.0,
                   cells=("w16_n5000_e60", "w8_n5000_e60", "w16_n5000_e100", "w16_n5000_e30",
                          "w8_nall_e30", "w16_nall_e20")),
    # The digits and the controls demo's teacher: seconds, for the test suite.
    "demo": dict(preset=pruning_controls.demo, student="vgg11", lr=0.05, max_kd_minutes=1.0,
                 cells=("w32_n300_e2", "w64_nall_e2")),
}


def shaped(epochs: int, lr: float) -> Schedule:
    """PAPER.md's schedule shape at CPU scale: milestones at 30/60/80% of the epochs, x 0.2."""
    milestones = tuple(sorted({m for f in (0.3, 0.6, 0.8) if 1 <= (m := round(epochs * f)) < epochs}))
    return Schedule(epochs=epochs, batch_size=128, lr=lr, milestones=milestones, lr_factor=0.2, weight_decay=5e-4)


def kd_name(kd: KDSpec) -> str:
    return f"kd_T{kd.temperature:g}_a{kd.alpha:g}"


def interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean and 95% paired t-interval of per-seed differences (`pdjax.stats.nested` over one
    teacher: a paired t over the seeds)."""
    c = pdjax.stats.nested([differences])
    nan = float("nan")
    return c.mean, nan if c.low is None else c.low, nan if c.high is None else c.high


def choose(rows: list[dict[str, Any]], max_kd_minutes: float) -> tuple[dict[str, Any] | None, str]:
    """The rule in the module docstring."""
    done = [r for r in rows if r["seeds"] >= 3]
    meets = [r for r in done if r["kd_minus_scratch"] >= 0.02 and r["lower"] > 0
             and r["kd_minutes"] <= max_kd_minutes]
    if meets:
        best = max(meets, key=lambda r: r["lower"])
        return best, (f"chosen: {best['cell']} {best['kd']} (KD - scratch {100 * best['kd_minus_scratch']:+.2f} "
                      f"points, 95% {100 * best['lower']:+.2f} to {100 * best['upper']:+.2f}; a KD student "
                      f"{best['kd_minutes']:.1f} min): the largest lower end among the cells that meet the "
                      f"criterion within {max_kd_minutes:g} min a KD student")
    if not done:
        return None, "no cell has 3 seeds yet"
    best = max(done, key=lambda r: r["kd_minus_scratch"])
    return best, (f"no cell meets the criterion (>= 2 points, lower end > 0, <= {max_kd_minutes:g} min a KD "
                  f"student): the largest mean is {best['cell']} {best['kd']} "
                  f"({100 * best['kd_minus_scratch']:+.2f} points, 95% {100 * best['lower']:+.2f} to "
                  f"{100 * best['upper']:+.2f})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(FAMILIES), default="vgg")
    parser.add_argument("--cells", default=None, help="comma-separated cells (default: the family's, in order)")
    parser.add_argument("--seeds", default="0,1,2", help="student seeds (default 0,1,2)")
    parser.add_argument("--kd", default="4/0.9,10/0.95", help="T/alpha pairs (default 4/0.9,10/0.95)")
    parser.add_argument("--max-kd-minutes", type=float, default=None,
                        help="a KD student's cost ceiling for the choice (default per family)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--teacher-from", default=None,
                        help="a saved teacher (stage directory or saved tree) to evaluate instead of training")
    parser.add_argument("--reuse", default=None,
                        help="a previous results.json of this family: its students are not trained again")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    family = FAMILIES[args.family]
    try:
        cells = [Cell.parse(c) for c in (args.cells.split(",") if args.cells else family["cells"])]
        seeds = [int(s) for s in args.seeds.split(",")]
        kds = [KDSpec(float(t), float(a)) for t, a in (pair.split("/") for pair in args.kd.split(","))]
    except ValueError as e:
        parser.error(str(e))
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        parser.error(f"--seeds {args.seeds}: distinct seeds >= 0")
    max_kd_minutes = args.max_kd_minutes or family["max_kd_minutes"]
    config = family["preset"]()
    out = Path(args.out or f"runs/kd_regime_probe/{args.family}")
    data = pdjax.data.load(config.data, val_fraction=config.val_fraction, split_seed=config.seed)
    teacher_spec = config.teacher
    model, teacher, _ = pdjax.designs.stage.train_stage(
        "teacher", model_name=teacher_spec.name, data=data, schedule=config.teacher_train, out=out,
        seed=config.teacher_seeds[0], widths=teacher_spec.widths, model_options=teacher_spec.options(),
        progress=False, init_from=args.teacher_from)
    print(json.dumps({"stage": "teacher", "val_accuracy": teacher.val_accuracy,
                      "train_seconds": round(teacher.train_seconds, 1)}), flush=True)
    earlier = reused(args.reuse, args.family, teacher.val_accuracy) if args.reuse else {}
    # The CPU's feature flags (XLA:CPU compiles for them: another machine's student of the same
    # seed differs in its floats, though not in its distribution).
    machine = pdjax.designs.common.environment()["host_cpu_flags"]
    source = pdjax.distill.Teacher(model, teacher.best_variables)
    students: list[dict[str, Any]] = []
    header = {"family": args.family,
              "command": "python experiments/kd_regime_probe.py " + " ".join(argv),
              "teacher": dataclasses.asdict(teacher_spec), "teacher_val_accuracy": teacher.val_accuracy,
              "teacher_train_seconds": teacher.train_seconds, "teacher_from": args.teacher_from,
              "reused_from": args.reuse, "student": family["student"], "lr": family["lr"],
              "subset_seed": SUBSET_SEED, "max_kd_minutes": max_kd_minutes}
    for cell in cells:
        cell_data = pdjax.data.train_subset(data, cell.size, SUBSET_SEED)
        schedule = shaped(cell.epochs, family["lr"])
        widths = pdjax.models.scaled_widths(family["student"], 1 / cell.width)
        for seed in seeds:
            for arm, kd in [("scratch", None)] + [(kd_name(k), k) for k in kds]:
                if (cell.name, arm, seed) in earlier:
                    students.append(earlier[cell.name, arm, seed])
                    continue
                stage = f"{cell.name}/{arm}_seed{seed}"
                extra = {} if kd is None else {"teacher": source, "kd": kd}
                _, result, _ = pdjax.designs.stage.train_stage(
                    stage, model_name=family["student"], data=cell_data, schedule=schedule, out=out,
                    seed=pdjax.designs.stage.STUDENT_SEED_OFFSET + seed, widths=widths, progress=False, **extra)
                students.append({"cell": cell.name, "arm": arm, "seed": seed, "train_images": len(cell_data.train),
                                 "val_accuracy": result.val_accuracy, "best_epoch": result.best_epoch,
                                 "epochs": cell.epochs, "minutes": round(result.train_seconds / 60, 2),
                                 "machine": machine})
                print(json.dumps(students[-1]), flush=True)
                report(out, header, cells, kds, students)
    report(out, header, cells, kds, students, final=True)


def reused(path: str, family: str, teacher_val: float) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The students a previous results.json records, by (cell, arm, seed), each marked as reused."""
    record = json.loads(Path(path).read_text())
    if record.get("family") != family:
        raise SystemExit(f"--reuse {path}: a probe of family {record.get('family')!r}, not {family!r}")
    if record.get("teacher_val_accuracy") != teacher_val:
        raise SystemExit(f"--reuse {path}: its teacher's validation accuracy {record.get('teacher_val_accuracy')} "
                         f"is not this run's {teacher_val}: another teacher, its students do not apply")
    return {(s["cell"], s["arm"], s["seed"]): {**s, "reused": True} for s in record["students"]}


def cell_rows(cell: Cell, kds: list[KDSpec], students: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A cell's rows, one per KD setting, over the seeds that have both students (none below 2)."""
    rows = []
    scratch = {s["seed"]: s for s in students if s["cell"] == cell.name and s["arm"] == "scratch"}
    for kd in kds:
        distilled = {s["seed"]: s for s in students if s["cell"] == cell.name and s["arm"] == kd_name(kd)}
        seeds = sorted(scratch.keys() & distilled.keys())
        if len(seeds) < 2:
            continue
        differences = [distilled[s]["val_accuracy"] - scratch[s]["val_accuracy"] for s in seeds]
        mean, lower, upper = interval(differences)
        rows.append({"cell": cell.name, "width": f"1/{cell.width}", "train_images": scratch[seeds[0]]["train_images"],
                     "epochs": cell.epochs, "kd": kd_name(kd), "seeds": len(seeds),
                     "scratch_val": statistics.fmean(scratch[s]["val_accuracy"] for s in seeds),
                     "kd_val": statistics.fmean(distilled[s]["val_accuracy"] for s in seeds),
                     "kd_minus_scratch": mean, "lower": lower, "upper": upper,
                     "per_seed": [round(d, 4) for d in differences],
                     "kd_best_epochs": [distilled[s]["best_epoch"] for s in seeds],
                     "scratch_minutes": statistics.fmean(scratch[s]["minutes"] for s in seeds),
                     "kd_minutes": statistics.fmean(distilled[s]["minutes"] for s in seeds)})
    return rows


def report(out: Path, header: dict[str, Any], cells: list[Cell], kds: list[KDSpec],
           students: list[dict[str, Any]], final: bool = False) -> None:
    """Rewrites results.md / results.json from the students so far (a cell's rows once two seeds
    have both arms; `header` is the run's fixed part of results.json); prints the table at the end."""
    rows = [row for cell in cells for row in cell_rows(cell, kds, students)]
    chosen, verdict = choose(rows, header["max_kd_minutes"])
    shown = [{**r, "per_seed": " ".join(f"{100 * d:+.1f}" for d in r["per_seed"]),
              "kd_best_epochs": " ".join(map(str, r["kd_best_epochs"]))} for r in rows]
    table = pdjax.render.markdown_table(shown, [
        ("cell", "cell", "s"), ("width", "student width", "s"), ("train_images", "train images", "d"),
        ("epochs", "epochs", "d"), ("kd", "KD", "s"), ("seeds", "seeds", "d"), ("scratch_val", "scratch val", ".4f"),
        ("kd_val", "KD val", ".4f"), ("kd_minus_scratch", "KD - scratch", "+.4f"), ("lower", "95% low", "+.4f"),
        ("upper", "95% high", "+.4f"), ("per_seed", "per seed (points)", "s"), ("kd_best_epochs", "KD best epochs", "s"),
        ("scratch_minutes", "scratch min", ".1f"), ("kd_minutes", "KD min", ".1f")])
    teacher = header["teacher"]
    markdown = (f"# KD regime probe: {header['family']} ({teacher['name']} at {teacher['width_multiplier']:g} "
                f"width, best val {header['teacher_val_accuracy']:.4f}; {header['student']} students; validation "
                f"accuracy only)\n\n    {header['command']}\n\n{table}\n\n{verdict}\n")
    record = {**header, "rows": rows, "students": students,
              "chosen": None if chosen is None else {"cell": chosen["cell"], "kd": chosen["kd"]},
              "verdict": verdict, "environment": pdjax.designs.common.environment()}
    pdjax.render.write_results(out, record, markdown)
    if final:
        print(table, flush=True)
        print(verdict, flush=True)


if __name__ == "__main__":
    runs.enable_compilation_cache()
    main()
