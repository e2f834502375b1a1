"""What a prune-then-distill run produced, as records, and its students' paired comparisons.

`pdjax.designs.prune_distill.prune_then_distill` returns a `PipelineResult`: each teacher with its pruning
rounds (`TeacherResult`, `TeacherRound`), a row per trained stage, the paper's student table
(`StudentRow`: one student arm over every seed) and the validation curves. `to_json` is its part
of results.json; `comparisons` compares the student arms seed by seed (`pdjax.stats.paired`).
`pdjax.designs.prune_distill.report` turns it into markdown and plots.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Mapping

from pdjax import sparsity, stats
from pdjax.types import Masks


@dataclasses.dataclass(frozen=True)
class TeacherRound:
    """The teacher after one pruning round; round 0 is the unpruned teacher.

    Attributes:
      round: its number (0: unpruned).
      sparsity: the fraction of prunable weights its masks remove.
      test_accuracy: its own (pruning rounds keep their last epoch; round 0 its best).
      masks: its masks (all kept for round 0).
      summary: its row of the pruning table in results.json.
    """

    round: int
    sparsity: float
    test_accuracy: float
    masks: Masks = dataclasses.field(repr=False, compare=False)
    summary: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)

    @property
    def label(self) -> str:
        return "teacher" if self.round == 0 else f"round {self.round} ({self.sparsity:.0%})"


@dataclasses.dataclass(frozen=True)
class TeacherResult:
    """One teacher and its pruning rounds, keyed by round number (0: the unpruned teacher)."""

    name: str  # its architecture
    stage: str  # the teacher's stage name ("teacher", or "<name>/teacher" with several teachers)
    rounds: Mapping[int, TeacherRound]

    def masks_and_labels(self) -> tuple[list[Masks], list[str]]:
        """Every round's masks and label, in round order (for the density tables and plots)."""
        return [r.masks for r in self.rounds.values()], [r.label for r in self.rounds.values()]


@dataclasses.dataclass(frozen=True)
class StudentRow:
    """One student arm, over every seed: the paper's table has a row per arm.

    Attributes:
      student: its `StudentSpec.label`.
      model, widths: its architecture and widths.
      width_rule: the rule its widths come from (None: fixed widths).
      derived_round: the pruning round whose masks gave its widths (None: fixed widths).
      arm: "scratch", "kd_unpruned" or "kd_pruned".
      teacher_model: the architecture it was distilled from (None: from scratch).
      teacher_round: the round of the teacher it was distilled from (0: unpruned; None: scratch).
      test_accuracies, seeds: per seed.
    """

    student: str
    model: str
    widths: tuple[int, ...]
    width_rule: str | None
    derived_round: int | None
    derived_from_sparsity: float | None
    arm: str
    teacher_model: str | None
    teacher_round: int | None
    teacher_sparsity: float | None
    teacher_test_accuracy: float | None
    student_params: int
    test_accuracies: tuple[float, ...]
    seeds: tuple[int, ...]
    # Per seed, on the test split, against its teacher (`pdjax.diagnostics`; empty: scratch):
    # top-1 agreement and KL(teacher || student) at T = 1.
    agreements: tuple[float, ...] = ()
    kls: tuple[float, ...] = ()

    @property
    def test_accuracy(self) -> float:
        return statistics.fmean(self.test_accuracies)

    @property
    def test_accuracy_std(self) -> float | None:
        return statistics.stdev(self.test_accuracies) if len(self.test_accuracies) > 1 else None

    @property
    def teacher(self) -> str:
        """The teacher column of the paper's table."""
        if self.teacher_model is None:
            return "none (scratch)"
        return f"{self.teacher_model} {'unpruned' if self.teacher_round == 0 else 'pruned'}"

    def to_json(self) -> dict[str, Any]:
        return {"student": self.student, "model": self.model, "arm": self.arm, "width_rule": self.width_rule,
                "widths": list(self.widths), "derived_from_sparsity": self.derived_from_sparsity,
                "teacher": self.teacher, "teacher_model": self.teacher_model,
                "teacher_sparsity": self.teacher_sparsity, "teacher_test_accuracy": self.teacher_test_accuracy,
                "student_params": self.student_params, "test_accuracy": self.test_accuracy,
                "test_accuracy_std": self.test_accuracy_std, "test_accuracies": list(self.test_accuracies),
                "seeds": list(self.seeds),
                **({"agreement": statistics.fmean(self.agreements), "agreements": list(self.agreements),
                    "kl": statistics.fmean(self.kls), "kls": list(self.kls)} if self.agreements else {})}


@dataclasses.dataclass
class PipelineResult:
    """What `prune_then_distill` returns; `to_json` is its results.json part."""

    teachers: list[TeacherResult]
    rows: list[dict[str, Any]]  # every trained model (a stage), one row each
    students: list[StudentRow]  # the paper's table: student x teacher kind x sparsity
    curves: dict[str, list[float]]  # validation accuracy per epoch, per stage
    plan: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # a dry run's cost plan (Stages.plan)

    def train_seconds(self) -> dict[str, float]:
        """The stages' training seconds summed by kind: teachers, pruning rounds (round 0 is the
        teacher, counted once), students, and their total. Restores, reports and data loading
        are not in it; nor is whatever else shared the machine taken out."""
        teacher_stages = {t.stage for t in self.teachers}
        teachers = sum(r.get("train_seconds") or 0.0 for r in self.rows if r["stage"] in teacher_stages)
        students = sum(r.get("train_seconds") or 0.0 for r in self.rows if r["stage"] not in teacher_stages)
        pruning = sum(r.summary.get("train_seconds") or 0.0
                      for t in self.teachers for k, r in t.rounds.items() if k > 0)
        return {"teachers": teachers, "pruning": pruning, "students": students,
                "total": teachers + pruning + students}

    def to_json(self) -> dict[str, Any]:
        return {"teachers": [t.name for t in self.teachers], "rows": self.rows,
                "train_seconds": self.train_seconds(),
                "students": [s.to_json() for s in self.students], "comparisons": comparisons(self),
                "pruning": [{"teacher": t.name, **r.summary} for t in self.teachers for r in t.rounds.values()],
                "layer_density": {t.name: {r.label: [dataclasses.asdict(s) for s in sparsity.layer_stats(r.masks)]
                                           for r in t.rounds.values()}
                                  for t in self.teachers},
                "curves": self.curves, **({"plan": self.plan} if self.plan else {})}


def _arm_label(row: StudentRow) -> str:
    if row.teacher_model is None:
        return "scratch"
    if row.teacher_round == 0:
        return f"KD from {row.teacher_model} unpruned"
    return f"KD from {row.teacher_model} pruned {row.teacher_sparsity:.0%}"


def student_name(model: str, width_rule: str | None, derived_from_sparsity: float | None) -> str:
    """A student's name in reports: its model, and for widths derived from a pruned teacher's
    sparsity the rule and that sparsity ("vgg19 chain st36"), as one run can hold several."""
    if derived_from_sparsity is None:
        return model
    return f"{model} {width_rule} st{round(100 * derived_from_sparsity)}"


def student_label(row: StudentRow) -> str:
    label = student_name(row.model, row.width_rule, row.derived_from_sparsity)
    return label if row.derived_from_sparsity is None else f"{label} {row.widths}"


def comparisons(result: PipelineResult) -> list[dict[str, Any]]:
    """Seed-by-seed comparisons of the student arms (see `pdjax.stats.paired`).

    Among students of the same architecture and widths: each KD-from-pruned arm against
    KD from the same teacher unpruned, and each KD arm against scratch. Among students derived
    from the same pruned teacher by different width rules: each other rule's arm against the
    chain rule's student in the same arm (same teacher, or both from scratch). Differences are
    test accuracy of the arm minus that of the arm it is compared with, per seed.
    """
    groups: dict[tuple, list[StudentRow]] = {}
    for row in result.students:
        groups.setdefault((row.student, row.model, row.widths), []).append(row)
    out = []

    def compare(arm: StudentRow, baseline: StudentRow, baseline_label: str | None = None) -> None:
        c = stats.paired(list(arm.test_accuracies), list(baseline.test_accuracies))
        out.append({"student": student_label(arm), "arm": _arm_label(arm),
                    "baseline": baseline_label or _arm_label(baseline),
                    "differences": list(c.differences), "mean": c.mean, "std": c.std,
                    "wins": c.wins, "losses": c.losses, "ties": c.ties,
                    "record": f"{c.wins}/{c.losses}/{c.ties}", "t": c.t, "p": c.p, "sign_p": c.sign_p,
                    "verdict": c.verdict, "seeds": list(arm.seeds)})

    for rows in groups.values():
        scratch = next((r for r in rows if r.arm == "scratch"), None)
        for row in rows:
            if row.arm == "kd_pruned":
                unpruned = next((r for r in rows if r.arm == "kd_unpruned" and r.teacher_model == row.teacher_model),
                                None)
                if unpruned is not None:
                    compare(row, unpruned)
            if row.arm != "scratch" and scratch is not None:
                compare(row, scratch)
    chain = {(r.model, r.derived_round, r.arm, r.teacher_model): r for r in result.students if r.width_rule == "chain"}
    for row in result.students:
        if row.width_rule in (None, "chain"):
            continue
        baseline = chain.get((row.model, row.derived_round, row.arm, row.teacher_model))
        if baseline is not None:
            compare(row, baseline, f"{student_label(baseline)}, same arm")
    return out
