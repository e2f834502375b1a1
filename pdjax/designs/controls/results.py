"""What a controls run produced: its teachers (`TeacherArm`), its students (`Student`) and the
contrasts between student arms (`ControlsResult`), paired by teacher and student seed.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import numpy as np

from pdjax import stats
from pdjax.designs.controls.config import CONTRASTS, ControlsConfig

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
    # On the test split (`pdjax.diagnostics`): expected calibration error, negative
    # log-likelihood, and the entropy of its soft labels at the KD temperature (None: a result
    # from before they were measured).
    ece: float | None = None
    nll: float | None = None
    entropy: float | None = None


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
    # On the test split, against its teacher (`pdjax.diagnostics`; None: scratch, or a result from
    # before they were measured): top-1 agreement and KL(teacher || student) at T = 1.
    agreement: float | None = None
    kl: float | None = None

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
    rows: list[dict[str, Any]]  # every trained stage, as `pdjax.designs.stage.train_stage` reports it
    curves: dict[str, list[float]]  # validation accuracy per epoch, per stage
    plan: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # a dry run's cost plan (Stages.plan)

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

    def contrast_arms(self) -> list[tuple[str, str, int]]:
        """(arm a, arm b, round) of every contrast `contrasts` reports, in its order: the
        contrasts of `CONTRASTS` whose arms were both trained, at every round, with students."""
        return [(a, b, k) for k in self.config.rounds for a, b in CONTRASTS
                if a in self.config.arms and b in self.config.arms and any(self.differences(a, b, k))]

    def contrasts(self, *, level: float = 0.05) -> list[dict[str, Any]]:
        """Every contrast of `contrast_arms` with its nested statistics (`pdjax.stats.nested`)
        and Holm's adjustment over all of them."""
        out = []
        for a, b, k in self.contrast_arms():
            per_teacher = self.differences(a, b, k)
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
                        "method": c.method,
                        "p_sign_flip": stats.sign_flip(c.teacher_means) if c.teachers > 1 else None})
        # Holm over every contrast; with a pre-registered primary contrast, over the others only
        # (the primary is decided by `preregistered`, unadjusted).
        primary = self.config.primary
        roles = ["primary" if arms == primary else "secondary" for arms in self.contrast_arms()]
        family = [i for i, role in enumerate(roles) if role == "secondary"]
        for i, adjusted in zip(family, stats.holm([out[i]["p"] for i in family])):
            out[i]["p_holm"] = adjusted
        if primary is not None:
            for row, role in zip(out, roles):
                row["role"] = role
                row.setdefault("p_holm", None)
        return out

    def preregistered(self, *, level: float = 0.05) -> dict[str, Any] | None:
        """The pre-registered analysis of the primary contrast (config `margin`): its interval and
        t-test over teachers, the exact sign-flip p-value, TOST against +-margin and the verdict
        its rules give (`pdjax.stats.verdict`); None without a margin or before the primary
        contrast has students."""
        primary = self.config.primary
        if primary is None or primary not in self.contrast_arms():
            return None
        a, b, k = primary
        c = stats.nested(self.differences(a, b, k), level=level)
        e = stats.tost(c.teacher_means, self.config.margin, level=level)
        flip = stats.sign_flip(c.teacher_means) if c.teachers > 1 else None
        return {"contrast": f"{arm_label(a, k)} - {arm_label(b, k)}", "round": k, "margin": self.config.margin,
                "mean": c.mean, "low": c.low, "high": c.high, "p": c.p, "df": c.df, "teachers": c.teachers,
                "seeds": c.seeds, "p_sign_flip": flip, "p_tost": e.p, "tost_low": e.low, "tost_high": e.high,
                "verdict": stats.verdict(c, e, flip, level=level), "level": level}

    def teacher_accuracy(self, student: Student) -> float | None:
        """The test accuracy of the teacher `student` learnt from (None: scratch)."""
        for t in self.teachers:
            if (t.teacher_seed, t.arm, t.round) == (student.teacher_seed, student.arm, student.round or 0):
                return t.test_accuracy
        return None

    def mixed_model(self) -> list[dict[str, Any]]:
        """What pruning adds at equal teacher accuracy: for each distilled round, over the
        students of its sequences, a linear mixed model (statsmodels' MixedLM, REML)

            student test acc ~ sequence (dense the reference) + teacher test acc + (1 | teacher)

        with a random intercept per teacher seed. The magnitude coefficient is what magnitude
        pruning adds over the same retraining without pruning when both teachers are equally
        accurate. One row per round and coefficient; [] with fewer than two teachers, or
        without statsmodels (`pip install -e '.[analysis]'`: `mixed_model_available`)."""
        if not mixed_model_available() or len(self.config.teacher_seeds) < 2:
            return []
        import warnings

        import pandas as pd
        import statsmodels.formula.api as smf

        out = []
        for k in self.config.rounds:
            rows = [{"student": s.test_accuracy, "teacher": self.teacher_accuracy(s), "sequence": s.arm,
                     "group": s.teacher_seed} for s in self.students if s.round == k]
            if len({r["group"] for r in rows}) < 2 or "dense" not in {r["sequence"] for r in rows}:
                continue
            frame = pd.DataFrame(rows)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence notes on tiny designs (the tests' demo)
                try:
                    fitted = smf.mixedlm("student ~ C(sequence, Treatment('dense')) + teacher", frame,
                                         groups=frame["group"]).fit(reml=True)
                except (ValueError, np.linalg.LinAlgError):  # a design too small to estimate
                    continue
            intervals = fitted.conf_int()
            for name in fitted.fe_params.index:
                term = name.replace("C(sequence, Treatment('dense'))[T.", "").rstrip("]")
                out.append({"round": k, "term": {"Intercept": "intercept", "teacher": "teacher test acc"}.get(
                                term, f"{term} - dense"),
                            "estimate": float(fitted.fe_params[name]), "low": float(intervals.loc[name, 0]),
                            "high": float(intervals.loc[name, 1]), "p": float(fitted.pvalues[name]),
                            "students": len(rows), "teachers": len({r["group"] for r in rows})})
        return out

    def transfer(self) -> list[dict[str, Any]]:
        """Per student arm (teacher kind and round): its teachers' mean test ECE, NLL and
        soft-label entropy, its students' mean agreement with and KL from their teachers, and the
        students' mean test accuracy: does pruning make the teacher a better regularizer? Arms
        without measurements (results from before they existed) are left out."""
        out = []
        for label in dict.fromkeys(s.label for s in self.students if s.arm != "scratch"):
            members = [s for s in self.students if s.label == label and s.agreement is not None]
            keys = {(s.teacher_seed, s.arm, s.round or 0) for s in members}
            teachers = [t for t in self.teachers if (t.teacher_seed, t.arm, t.round) in keys and t.ece is not None]
            if not members or not teachers:
                continue
            out.append({"arm": label, "teachers": len(teachers), "students": len(members),
                        "teacher_accuracy": statistics.fmean(t.test_accuracy for t in teachers),
                        "teacher_ece": statistics.fmean(t.ece for t in teachers),
                        "teacher_nll": statistics.fmean(t.nll for t in teachers),
                        "teacher_entropy": statistics.fmean(t.entropy for t in teachers),
                        "agreement": statistics.fmean(s.agreement for s in members),
                        "kl": statistics.fmean(s.kl for s in members),
                        "student_accuracy": statistics.fmean(s.test_accuracy for s in members)})
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
        out = {"teachers": [dataclasses.asdict(t) for t in self.teachers],
               "students": [dataclasses.asdict(s) for s in self.students],
               "contrasts": self.contrasts(), "best_epochs": self.best_epochs(), "rows": self.rows,
               "train_seconds": self.train_seconds(), "curves": self.curves}
        if self.config.primary is not None:
            out["preregistered"] = self.preregistered()
        transfer = self.transfer()
        if transfer:
            out["transfer"] = transfer
        model = self.mixed_model()
        if model:
            out["mixed_model"] = model
        if self.plan:
            out["plan"] = self.plan
        return out

    def train_seconds(self) -> dict[str, float]:
        """Training seconds summed by kind (teachers, pruning and control rounds, students)."""
        kinds = {"teachers": 0.0, "rounds": 0.0, "students": 0.0}
        for row in self.rows:
            kind = "students" if "student_" in row["stage"] else "rounds" if "/round_" in row["stage"] else "teachers"
            kinds[kind] += row.get("train_seconds") or 0.0
        return {**kinds, "total": sum(kinds.values())}


def _round_of(arm: str, round: int) -> int | None:
    return None if arm in ("scratch", "unpruned") else round


def mixed_model_available() -> bool:
    """Whether statsmodels (the `analysis` extra) is installed, for `ControlsResult.mixed_model`."""
    import importlib.util

    return importlib.util.find_spec("statsmodels") is not None
