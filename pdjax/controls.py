"""Is it the pruning, or the extra training? The pruned teacher against its two controls.

Each pruning round retrains the teacher with a rewound learning rate, so a teacher pruned for k
rounds has also trained k rounds longer than the unpruned one. This design separates the two:
for each of several independently trained teachers (`teacher_seeds`), three sequences of the
same rounds, epochs and rewinding (`pdjax.pruning`):

    magnitude   the paper's: global magnitude pruning
    dense       criterion "none": the same retraining, nothing pruned
    random      in every layer as many weights as the magnitude round keeps, at random positions

and students of one architecture and width, each student seed paired across every arm (same
initialisation and data order):

    scratch                              no teacher (shared by all teachers)
    unpruned                             KD from the teacher as trained
    magnitude / dense / random, round k  KD from that sequence's round-k teacher

The contrasts (`CONTRASTS`, student test accuracy of one arm minus another's, per teacher and
seed): magnitude - unpruned (the paper's claim), magnitude - dense (the question: pruning, at
equal training), magnitude - random (which weights), dense - unpruned (the extra training
alone); each with a two-level interval and test (`pdjax.stats.nested`), Holm-corrected over
the contrasts reported.

Stages (each resumable) under `out`:
    teacher_seed<t>/teacher/, teacher_seed<t>/{magnitude,dense,random}/round_<k>/,
    student_scratch_seed<s>/, teacher_seed<t>/student_<arm>[_round_<k>]_seed<s>/

Usage:
    result = pdjax.controls.run(config, out="runs/controls", data=data)
    print(pdjax.controls.report(result, "VGG19 -> VGG11"))
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any, Sequence

from jax.sharding import Mesh

from pdjax import distill, models, paper, parallel, pruning, reports, stats
from pdjax.data import ImageData
from pdjax.distill import KDSpec
from pdjax.pruning import PruneSpec
from pdjax.train import Schedule
from pdjax.specs import distinct_seeds, shared_checks
from pdjax.types import check

# criterion -> arm name
SEQUENCES = {"magnitude": "magnitude", "none": "dense", "random": "random"}
ARMS = ("scratch", "unpruned", "magnitude", "dense", "random")
CONTRASTS = (("magnitude", "unpruned"), ("magnitude", "dense"), ("magnitude", "random"), ("dense", "unpruned"))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """An architecture at a width: `pdjax.models.get(name, ..., widths=scaled_widths(name,
    width_multiplier))`, with a narrower ResNet stem where `stem_width` is set."""

    name: str
    width_multiplier: float = 1.0
    stem_width: int | None = None

    def __post_init__(self) -> None:
        check([(self.name in models.NAMES, f"name={self.name!r}: use one of {', '.join(models.NAMES)}"),
               (self.width_multiplier > 0, f"width_multiplier={self.width_multiplier} must be > 0"),
               (self.stem_width is None or (self.stem_width >= 1 and self.name.startswith("resnet")),
                f"stem_width={self.stem_width} needs a resnet (not {self.name}) and a width >= 1")])

    @property
    def widths(self) -> tuple[int, ...]:
        return models.scaled_widths(self.name, self.width_multiplier)

    def options(self) -> dict[str, Any]:
        return {} if self.stem_width is None else {"stem_width": self.stem_width}


@dataclasses.dataclass(frozen=True)
class ControlsConfig:
    """The whole design, passed whole (experiments/pruning_controls.py holds its presets); the
    defaults are the paper's VGG19 -> VGG11 on CIFAR-100 (PAPER.md's schedules).

    Attributes:
      data: the data source (`pdjax.data.load`).
      teacher, student: the two architectures and widths.
      teacher_train: the teachers' schedule.
      student_scratch, student_kd: the students' schedules from scratch and by KD.
      prune: every sequence's rounds, fraction, scope, rewinding and round schedule; its
        `criterion` must stay "magnitude": `criteria` chooses the sequences.
      kd: the KD loss's T and alpha.
      criteria: the sequences run for every teacher ("magnitude" always among them).
      rounds: the rounds whose teachers are distilled, each in 1..prune.rounds.
      teacher_seeds: one independently trained teacher per seed (its init, data order and the
        random sequence's draws).
      seeds: student seeds, each paired across every arm.
      seed: the validation split's seed (the same split for every teacher).
      val_fraction, max_train, max_test, data_dir: as `pdjax.data.load` takes them.
      augment, eval_batch_size, compute_dtype: of every model.
    """

    data: str = "tfds:cifar100"
    teacher: ModelSpec = ModelSpec("vgg19")
    student: ModelSpec = ModelSpec("vgg11")
    teacher_train: Schedule = paper.CIFAR_TRAIN
    student_scratch: Schedule = paper.CIFAR_TRAIN
    student_kd: Schedule = paper.CIFAR_KD
    prune: PruneSpec = PruneSpec(paper.CIFAR_PRUNE)
    kd: KDSpec = KDSpec()
    criteria: tuple[str, ...] = ("magnitude", "none", "random")
    rounds: tuple[int, ...] = (7,)
    teacher_seeds: tuple[int, ...] = (0, 1, 2)
    seeds: tuple[int, ...] = (0, 1)
    seed: int = 0
    val_fraction: float = 0.1
    max_train: int | None = None
    max_test: int | None = None
    data_dir: str | None = None
    augment: bool = True
    eval_batch_size: int = 500
    compute_dtype: str = "float32"
    log: str = "none"  # "tensorboard": live curves of every stage under <run dir>/tensorboard/

    def __post_init__(self) -> None:
        checks = [
            (self.prune.criterion == "magnitude", f"prune.criterion={self.prune.criterion!r}: the sequences are "
                                                  "chosen by `criteria` here; leave it 'magnitude'"),
            ("magnitude" in self.criteria and all(c in SEQUENCES for c in self.criteria)
             and len(set(self.criteria)) == len(self.criteria),
             f"criteria={self.criteria}: distinct names among {', '.join(SEQUENCES)}, magnitude included"),
            (bool(self.rounds) and all(1 <= k <= self.prune.rounds for k in self.rounds),
             f"rounds={self.rounds} must lie in 1..prune.rounds ({self.prune.rounds})"),
            (len(set(self.rounds)) == len(self.rounds), f"rounds={self.rounds} must name each round once"),
            (distinct_seeds(self.teacher_seeds), f"teacher_seeds={self.teacher_seeds} must name distinct seeds >= 0"),
            *shared_checks(self),
        ]
        check(checks)

    @property
    def arms(self) -> tuple[str, ...]:
        """The student arms this config trains, in `ARMS` order."""
        return tuple(a for a in ARMS if a in ("scratch", "unpruned") or a in map(SEQUENCES.get, self.criteria))


@dataclasses.dataclass(frozen=True)
class TeacherArm:
    """One teacher a student learns from: a trained teacher (round 0) or a round of a sequence."""

    teacher_seed: int
    arm: str  # "unpruned", "magnitude", "dense", "random"
    round: int
    sparsity: float
    epochs: int  # epochs trained in all: the teacher's plus every round's up to this one
    val_accuracy: float
    test_accuracy: float


@dataclasses.dataclass(frozen=True)
class Student:
    """One trained student."""

    arm: str  # one of ARMS
    round: int | None  # the teacher's round (None: scratch and unpruned)
    teacher_seed: int | None  # None: scratch
    seed: int
    stage: str
    test_accuracy: float
    val_accuracy: float
    best_epoch: int
    epochs: int

    @property
    def label(self) -> str:
        return arm_label(self.arm, self.round)


def arm_label(arm: str, round: int | None) -> str:
    return arm if round is None else f"{arm} round {round}"


@dataclasses.dataclass
class ControlsResult:
    """What `run` returns; `to_json` is its results.json part."""

    config: ControlsConfig
    teachers: list[TeacherArm]
    students: list[Student]
    rows: list[dict[str, Any]]  # every trained stage, as `pdjax.pipeline.train_stage` reports it
    curves: dict[str, list[float]]  # validation accuracy per epoch, per stage

    def accuracy(self, arm: str, round: int | None, teacher_seed: int | None, seed: int) -> float | None:
        for s in self.students:
            if (s.arm, s.round, s.seed) == (arm, round, seed) and (arm == "scratch" or s.teacher_seed == teacher_seed):
                return s.test_accuracy
        return None

    def differences(self, a: str, b: str, round: int) -> list[list[float]]:
        """Per teacher, per seed: student test accuracy of arm `a` minus arm `b` (arms at `round`
        where they are rounds of a sequence), over the (teacher, seed) pairs both have."""
        out = []
        for t in self.config.teacher_seeds:
            diffs = []
            for s in self.config.seeds:
                x = self.accuracy(a, _round_of(a, round), t, s)
                y = self.accuracy(b, _round_of(b, round), t, s)
                if x is not None and y is not None:
                    diffs.append(x - y)
            out.append(diffs)
        return out

    def contrasts(self, *, level: float = 0.05) -> list[dict[str, Any]]:
        """Every contrast of `CONTRASTS` (both arms trained) at every round, with its nested
        statistics (`pdjax.stats.nested`) and Holm's adjustment over all of them."""
        out = []
        for k in self.config.rounds:
            for a, b in CONTRASTS:
                if a not in self.config.arms or b not in self.config.arms:
                    continue
                per_teacher = self.differences(a, b, k)
                if not any(per_teacher):
                    continue
                c = stats.nested(per_teacher, level=level)
                flat = [d for g in per_teacher for d in g]
                out.append({"round": k, "a": arm_label(a, _round_of(a, k)), "b": arm_label(b, _round_of(b, k)),
                            "contrast": f"{arm_label(a, _round_of(a, k))} - {arm_label(b, _round_of(b, k))}",
                            "mean": c.mean, "low": c.low, "high": c.high, "p": c.p, "df": c.df,
                            "teachers": c.teachers, "seeds": c.seeds, "mde": c.mde,
                            "sd_teacher": None if c.var_teacher is None else c.var_teacher ** 0.5,
                            "sd_seed": None if c.var_seed is None else c.var_seed ** 0.5,
                            "teacher_means": list(c.teacher_means), "differences": per_teacher,
                            "wins": sum(d > 0 for d in flat), "losses": sum(d < 0 for d in flat),
                            "record": f"{sum(d > 0 for d in flat)}/{sum(d < 0 for d in flat)}/{sum(d == 0 for d in flat)}",
                            "method": c.method})
        for row, adjusted in zip(out, stats.holm([r["p"] for r in out])):
            row["p_holm"] = adjusted
        return out

    def best_epochs(self) -> list[dict[str, Any]]:
        """Where each student arm's best validation epoch fell (did the students finish learning?)."""
        groups: dict[str, list[Student]] = {}
        for s in self.students:
            groups.setdefault(s.label, []).append(s)
        out = []
        for label, members in groups.items():
            epochs = members[0].epochs
            out.append({"arm": label, "students": len(members), "epochs": epochs,
                        "mean_best_epoch": statistics.fmean(m.best_epoch for m in members),
                        "best_epochs": sorted(m.best_epoch for m in members),
                        "in_last_two": sum(m.best_epoch >= epochs - 1 for m in members)})
        return out

    def to_json(self) -> dict[str, Any]:
        return {"teachers": [dataclasses.asdict(t) for t in self.teachers],
                "students": [dataclasses.asdict(s) for s in self.students],
                "contrasts": self.contrasts(), "best_epochs": self.best_epochs(), "rows": self.rows,
                "train_seconds": self.train_seconds(), "curves": self.curves}

    def train_seconds(self) -> dict[str, float]:
        """Training seconds summed by kind (teachers, pruning and control rounds, students)."""
        kinds = {"teachers": 0.0, "rounds": 0.0, "students": 0.0}
        for row in self.rows:
            kind = "students" if "student_" in row["stage"] else "rounds" if "/round_" in row["stage"] else "teachers"
            kinds[kind] += row.get("train_seconds") or 0.0
        return {**kinds, "total": sum(kinds.values())}


def pool(config: ControlsConfig, parts: Sequence[dict[str, Any]]) -> ControlsResult:
    """One result from the results.json of several runs of the same design on different teacher
    seeds (a run too long for one sitting, split by `--set teacher_seeds=...`). Each part brings
    its teachers and their students; the scratch students, which every part trains alike, come
    from the first part. `config.teacher_seeds` must be the union of the parts' teachers.

    Raises:
      ValueError: a teacher seed is in two parts, or in none.
    """
    result = ControlsResult(config, [], [], [], {})
    seen: set[int] = set()
    for i, part in enumerate(parts):
        teachers = [TeacherArm(**t) for t in part["teachers"]]
        mine = {t.teacher_seed for t in teachers}
        if mine & seen:
            raise ValueError(f"teacher seeds {sorted(mine & seen)} are in more than one part")
        seen |= mine
        result.teachers += teachers
        result.students += [Student(**s) for s in part["students"] if s["arm"] != "scratch" or i == 0]
        result.rows += [r for r in part["rows"] if "student_scratch" not in r["stage"] or i == 0]
        result.curves.update({k: v for k, v in part.get("curves", {}).items()
                              if "student_scratch" not in k or i == 0})
    if seen != set(config.teacher_seeds):
        raise ValueError(f"the parts hold teacher seeds {sorted(seen)}, the config names {sorted(config.teacher_seeds)}")
    return result


def _round_of(arm: str, round: int) -> int | None:
    return None if arm in ("scratch", "unpruned") else round


def run(config: ControlsConfig, *, out: str | Path, data: ImageData, mesh: Mesh | None = None,
        progress: bool = True) -> ControlsResult:
    """Runs (or resumes) the design of `config` (see the module docstring), teacher by teacher:
    a teacher, its sequences and all its students are done before the next teacher starts, so a
    run stopped early holds whole teachers.

    Args:
      config: the design.
      out: the run directory.
      data: the data set.
      mesh, progress: as in `pdjax.train.fit`.

    Returns:
      A `ControlsResult`.
    """
    from pdjax.pipeline import STUDENT_SEED_OFFSET, train_stage  # the stage helper of the pipeline

    mesh = mesh if mesh is not None else parallel.data_mesh()
    out = Path(out)
    logs = out / "tensorboard" if config.log == "tensorboard" else None
    common = dict(data=data, out=out, mesh=mesh, augment=config.augment, eval_batch_size=config.eval_batch_size,
                  progress=progress, compute_dtype=config.compute_dtype, tensorboard=logs)
    result = ControlsResult(config, [], [], [], {})
    needed = max(config.rounds)

    def stage(name: str, spec: ModelSpec, schedule: Schedule, seed: int, **options: Any):
        model, fitted, row = train_stage(name, model_name=spec.name, widths=spec.widths, schedule=schedule, seed=seed,
                                         model_options=spec.options(), **common, **options)
        result.rows.append(row)
        result.curves[name] = [h["val_accuracy"] for h in fitted.history]
        return model, fitted

    def student(name: str, arm: str, round: int | None, teacher_seed: int | None, seed: int,
                source: distill.Teacher | None) -> None:
        if source is None:
            _, fitted = stage(name, config.student, config.student_scratch, STUDENT_SEED_OFFSET + seed)
        else:
            _, fitted = stage(name, config.student, config.student_kd, STUDENT_SEED_OFFSET + seed, teacher=source,
                              kd=config.kd)
        result.students.append(Student(arm, round, teacher_seed, seed, name, fitted.test_accuracy, fitted.val_accuracy,
                                       fitted.best_epoch, len(fitted.history)))

    for s in config.seeds:  # the scratch students do not depend on the teacher
        student(f"student_scratch_seed{s}", "scratch", None, None, s, None)
    for t in config.teacher_seeds:
        prefix = f"teacher_seed{t}"
        model, teacher = stage(f"{prefix}/teacher", config.teacher, config.teacher_train, t)
        result.teachers.append(TeacherArm(t, "unpruned", 0, 0.0, len(teacher.history), teacher.val_accuracy,
                                          teacher.test_accuracy))
        sources = {("unpruned", None): distill.Teacher(model, teacher.best_variables)}
        reference = None
        for criterion in sorted(config.criteria, key=lambda c: c != "magnitude"):  # magnitude first
            arm = SEQUENCES[criterion]
            spec = dataclasses.replace(config.prune, criterion=criterion, rounds=needed)
            rounds = pruning.iterative_pruning(
                model, data, spec, variables=teacher.best_variables, workdir=out / prefix / arm,
                reference=reference if criterion == "random" else None, seed=t, mesh=mesh, augment=config.augment,
                eval_batch_size=config.eval_batch_size, progress=progress,
                tensorboard=None if logs is None else logs / prefix / arm)
            if criterion == "magnitude":
                reference = [r.masks for r in rounds]
            for r in rounds:
                summary = r.summary()
                result.rows.append({"stage": f"{prefix}/{arm}/round_{r.round:02d}", "model": config.teacher.name,
                                    "widths": list(config.teacher.widths), "sparsity": summary["sparsity"],
                                    **r.result.summary()})
                result.curves[f"{prefix}/{arm}/round_{r.round:02d}"] = [h["val_accuracy"] for h in r.result.history]
                if r.round in config.rounds:
                    epochs = len(teacher.history) + sum(len(x.result.history) for x in rounds[:r.round])
                    result.teachers.append(TeacherArm(t, arm, r.round, summary["sparsity"], epochs,
                                                      r.result.val_accuracy, r.result.test_accuracy))
                    sources[(arm, r.round)] = distill.Teacher(model, r.variables, r.masks)
        for s in config.seeds:
            student(f"{prefix}/student_unpruned_seed{s}", "unpruned", None, t, s, sources[("unpruned", None)])
            for k in config.rounds:
                for criterion in config.criteria:
                    arm = SEQUENCES[criterion]
                    student(f"{prefix}/student_{arm}_round_{k:02d}_seed{s}", arm, k, t, s, sources[(arm, k)])
    return result


# ---------------------------------------------------------------------------------- report

CONTRAST_COLUMNS: list[reports.Column] = [
    ("contrast", "contrast (student test acc)", "s"), ("mean_pts", "mean, points", "+.2f"),
    ("ci", "95% interval, points", "s"), ("p", "p", ".3f"), ("p_holm", "p, Holm", ".3f"),
    ("mde_pts", "detectable at 80% power, points", ".2f"), ("record", "pairs won/lost/tied", "s"),
    ("sd_teacher_pts", "sd between teachers", ".2f"), ("sd_seed_pts", "sd between seeds", ".2f")]


def _points(row: dict[str, Any]) -> dict[str, Any]:
    pts = lambda v: None if v is None else 100 * v  # noqa: E731
    ci = "" if row["low"] is None else f"{100 * row['low']:+.2f} to {100 * row['high']:+.2f}"
    return {**row, "mean_pts": pts(row["mean"]), "ci": ci, "mde_pts": pts(row["mde"]),
            "sd_teacher_pts": pts(row["sd_teacher"]), "sd_seed_pts": pts(row["sd_seed"])}


def answer(result: ControlsResult) -> str:
    """One sentence per round: is it the pruning, or the training (magnitude - dense)?"""
    lines = []
    for row in result.contrasts():
        if (row["a"].split()[0], row["b"].split()[0]) != ("magnitude", "dense"):
            continue
        if row["low"] is None or row["p_holm"] is None:
            why = "no interval" if row["low"] is None else "every teacher's difference the same, no test"
            lines.append(f"Round {row['round']}: magnitude - dense {100 * row['mean']:+.2f} points, {why} "
                         f"({row['teachers']} teacher(s) x {row['seeds']} seed(s)).")
            continue
        significant = row["p_holm"] < 0.05
        verdict = ("the pruned teacher's students differ from the equally trained dense teacher's"
                   if significant else "no measurable difference between pruning and the same extra training")
        lines.append(f"Round {row['round']}: magnitude - dense = {100 * row['mean']:+.2f} points "
                     f"(95% interval {100 * row['low']:+.2f} to {100 * row['high']:+.2f}, Holm p = "
                     f"{row['p_holm']:.3f}; {row['teachers']} teachers x {row['seeds']} seeds; this design detects "
                     f"{100 * row['mde']:.1f} points with 80% power): {verdict}.")
    return " ".join(lines)


def report(result: ControlsResult, title: str, notes: str = "") -> str:
    """The markdown report: the answer, the contrasts, per teacher, the teachers, the students'
    best epochs, every stage."""
    config = result.config
    contrasts = [_points(r) for r in result.contrasts()]
    per_teacher = []
    for r in contrasts:
        for t, (m, diffs) in zip(config.teacher_seeds, zip(r["teacher_means"], r["differences"])):
            per_teacher.append({"contrast": r["contrast"], "teacher": t, "mean_pts": 100 * m,
                                "per_seed": ", ".join(f"{100 * d:+.2f}" for d in diffs)})
    teacher_rows = [dataclasses.asdict(t) for t in result.teachers]
    arms = []
    for label in dict.fromkeys(s.label for s in result.students):
        accs = [s.test_accuracy for s in result.students if s.label == label]
        arms.append({"arm": label, "students": len(accs), "mean": statistics.fmean(accs),
                     "std": statistics.stdev(accs) if len(accs) > 1 else None})
    seconds = result.train_seconds()
    method = contrasts[0]["method"] if contrasts else ""
    return (
        f"# {title}\n\n{notes}"
        f"**Is it the pruning, or the training?** {answer(result)}\n\n"
        f"Design: {len(config.teacher_seeds)} teachers ({config.teacher.name} x{config.teacher.width_multiplier:g}, "
        f"seeds {', '.join(map(str, config.teacher_seeds))}), each pruned {config.prune.rounds} rounds of "
        f"{config.prune.fraction:.0%} ({config.prune.scope}, {config.prune.rewind} rewinding, "
        f"{config.prune.schedule.epochs} epochs a round) by magnitude and in the controls; students "
        f"{config.student.name} x{config.student.width_multiplier:g}, {len(config.seeds)} seeds per teacher, "
        f"{config.student_kd.epochs} epochs (KD T = {config.kd.temperature:g}, alpha = {config.kd.alpha:g}).\n\n"
        "## Contrasts\n\nStudent test accuracy of one arm minus another's, paired by teacher and seed, in points. "
        f"Interval and p: {method}. Holm's adjustment runs over every contrast of the table. "
        "'Detectable' is the smallest true difference this design finds with 80% power at the 5% level, given "
        "the spread measured here.\n\n"
        f"{reports.markdown_table(contrasts, CONTRAST_COLUMNS)}\n"
        "## Per teacher\n\n"
        f"{reports.markdown_table(per_teacher, [('contrast', 'contrast', 's'), ('teacher', 'teacher seed', 'd'), ('mean_pts', 'mean, points', '+.2f'), ('per_seed', 'per student seed, points', 's')])}\n"
        "## Student arms\n\n"
        f"{reports.markdown_table(arms, [('arm', 'arm', 's'), ('students', 'students', 'd'), ('mean', 'test acc', '.4f'), ('std', '± std (teachers and seeds)', '.4f')])}\n"
        "## Teachers\n\nTest accuracy of each teacher the students learnt from; `epochs` counts every epoch it "
        "was trained, the teacher's own and each round's.\n\n"
        f"{reports.markdown_table(teacher_rows, [('teacher_seed', 'teacher seed', 'd'), ('arm', 'arm', 's'), ('round', 'round', 'd'), ('sparsity', 'sparsity', '.3f'), ('epochs', 'epochs trained', 'd'), ('val_accuracy', 'val acc', '.4f'), ('test_accuracy', 'test acc', '.4f')])}\n"
        "## Did the students finish learning?\n\nThe epoch of best validation accuracy (the one reported), per "
        "arm.\n\n"
        f"{reports.markdown_table([{**b, 'best_epochs': ', '.join(map(str, b['best_epochs']))} for b in result.best_epochs()], [('arm', 'arm', 's'), ('students', 'students', 'd'), ('epochs', 'epochs', 'd'), ('mean_best_epoch', 'mean best epoch', '.1f'), ('in_last_two', 'best in the last two epochs', 'd'), ('best_epochs', 'best epochs', 's')])}\n"
        f"## Every trained model\n\n{reports.markdown_table(result.rows, _STAGE_COLUMNS)}\n"
        f"Training time, the stages' `train s` summed: teachers {seconds['teachers']:,.0f} s, pruning and control "
        f"rounds {seconds['rounds']:,.0f} s, students {seconds['students']:,.0f} s; {seconds['total']:,.0f} s "
        f"({seconds['total'] / 3600:.2f} h) in all.\n")


_STAGE_COLUMNS: list[reports.Column] = [
    ("stage", "stage", "s"), ("model", "model", "s"), ("best_epoch", "best epoch", "d"),
    ("val_accuracy", "val acc", ".4f"), ("test_accuracy", "test acc", ".4f"), ("train_seconds", "train s", ".1f")]


def plot(path: str | Path, result: ControlsResult, title: str) -> None:
    """One figure: left, each arm's students per teacher (dots: seeds; bar: the teacher's mean);
    right, each contrast per teacher (dots) and pooled (mean and 95% interval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.lines
    import matplotlib.pyplot as plt

    config = result.config
    labels = list(dict.fromkeys(s.label for s in result.students))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    n_t = len(config.teacher_seeds)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6), dpi=120, gridspec_kw={"width_ratios": [1.3, 1]})
    for i, label in enumerate(labels):
        if label == "scratch":  # no teacher: one group, shared by every teacher
            groups = [(None, i, "gray", [s for s in result.students if s.label == label])]
        else:
            groups = [(t, i + (j - (n_t - 1) / 2) * 0.7 / n_t, colors[j % len(colors)],
                       [s for s in result.students if s.label == label and s.teacher_seed == t])
                      for j, t in enumerate(config.teacher_seeds)]
        for _, x, color, members in groups:
            if members:
                ys = [100 * s.test_accuracy for s in members]
                left.scatter([x] * len(ys), ys, s=10, color=color, alpha=0.6)
                left.hlines(statistics.fmean(ys), x - 0.06, x + 0.06, color=color, linewidth=2)
    handles = [matplotlib.lines.Line2D([], [], color=colors[j % len(colors)], marker="o", linestyle="",
                                       label=f"teacher seed {t}") for j, t in enumerate(config.teacher_seeds)]
    left.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    left.set_ylabel("student test accuracy, % (dots: seeds; bars: means)")
    left.grid(alpha=0.3, axis="y")
    left.legend(handles=handles, fontsize=8)
    contrasts = result.contrasts()
    for i, row in enumerate(contrasts):
        for j, m in enumerate(row["teacher_means"]):
            right.scatter(100 * m, i + 0.15, s=12, color=colors[j % len(colors)], alpha=0.7)
        if row["low"] is not None:
            right.errorbar(100 * row["mean"], i - 0.1, xerr=[[100 * (row["mean"] - row["low"])],
                                                           [100 * (row["high"] - row["mean"])]],
                           fmt="o", color="black", capsize=4)
        else:
            right.scatter(100 * row["mean"], i - 0.1, color="black")
    right.axvline(0, color="gray", linewidth=1)
    right.set_yticks(range(len(contrasts)), [r["contrast"] for r in contrasts], fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("difference, points\n(black: pooled mean and 95% interval; dots: per teacher)")
    right.grid(alpha=0.3, axis="x")
    fig.suptitle(title)
    fig.tight_layout()
    reports.save_figure(fig, path)
