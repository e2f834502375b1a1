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

Its config is `config` (`ControlsConfig`), its records `results` (`ControlsResult`), its report
`report`; each stage is trained by `pdjax.designs.stage`. `pool` joins the results of runs split
by teacher (`load_parts` reads and checks them).

Usage:
    from pdjax.designs import controls
    result = controls.run_controls(config, out="runs/controls", data=data)
    print(controls.report.report(result, "VGG19 -> VGG11"))
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from jax.sharding import Mesh

from pdjax import diagnostics, distill
from pdjax.data import ImageData
from pdjax.designs.common import RunDirError, diff, upgrade
from pdjax.designs.controls.config import SEQUENCES, ControlsConfig
from pdjax.designs.controls.results import ControlsResult, Student, TeacherArm
from pdjax.designs.stage import STUDENT_SEED_OFFSET, Stages


def run_controls(config: ControlsConfig, *, out: str | Path, data: ImageData, mesh: Mesh | None = None,
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
    stages = Stages(config, data, Path(out), mesh, progress)
    result = ControlsResult(config, [], [], stages.rows, stages.curves, stages.plan)
    prune = dataclasses.replace(config.prune, rounds=max(config.rounds))
    spec = config.student

    def teacher_arm(t: int, arm: str, round: int, sparsity: float, epochs: int, fitted: Any,
                    source: distill.Teacher) -> np.ndarray:
        logits = stages.test_logits(source.model, source.variables, source.masks)
        measured = diagnostics.teacher_summary(logits, data.test.labels, config.kd.temperature)
        result.teachers.append(TeacherArm(t, arm, round, sparsity, epochs, fitted.val_accuracy, fitted.test_accuracy,
                                          measured["ece"], measured["nll"], measured["entropy"]))
        return logits

    def student(name: str, arm: str, round: int | None, teacher_seed: int | None, seed: int,
                source: distill.Teacher | None, teacher_logits: np.ndarray | None) -> None:
        schedule = config.student_scratch if source is None else config.student_distill
        extra = {} if source is None else {"teacher": source, "kd": config.kd, "teacher_stage": (
            f"teacher_seed{teacher_seed}/teacher" if arm == "unpruned"
            else f"teacher_seed{teacher_seed}/{arm}/round_{round:02d}")}
        model, fitted, _ = stages.train(name, spec.name, spec.widths, schedule, STUDENT_SEED_OFFSET + seed,
                                        model_options=spec.options(), data=stages.student_data, **extra)
        measured = {}
        if teacher_logits is not None:
            logits = stages.test_logits(model, fitted.best_variables)
            measured = {"agreement": diagnostics.agreement(logits, teacher_logits),
                        "kl": diagnostics.kl(teacher_logits, logits)}
        result.students.append(Student(arm, round, teacher_seed, seed, name, fitted.test_accuracy, fitted.val_accuracy,
                                       fitted.best_epoch, len(fitted.history), **measured))

    for s in config.seeds:  # the scratch students do not depend on the teacher
        student(f"student_scratch_seed{s}", "scratch", None, None, s, None, None)
    for t in config.teacher_seeds:
        prefix = f"teacher_seed{t}"
        directories = {c: f"{prefix}/{SEQUENCES[c]}" for c in config.criteria}
        sequences = stages.teacher_sequences(f"{prefix}/teacher", config.teacher.name, config.teacher.widths,
                                             config.teacher_train, prune, seed=t, directories=directories,
                                             model_options=config.teacher.options())
        model, teacher = sequences.model, sequences.teacher
        sources = {("unpruned", None): distill.Teacher(model, teacher.best_variables)}
        logits = {("unpruned", None): teacher_arm(t, "unpruned", 0, 0.0, len(teacher.history), teacher,
                                                   sources[("unpruned", None)])}
        for criterion, rounds in sequences.rounds.items():  # magnitude first
            arm = SEQUENCES[criterion]
            for r in rounds:
                summary = r.summary()
                stages.rows.append({"stage": f"{prefix}/{arm}/round_{r.round:02d}", "model": config.teacher.name,
                                    "widths": list(config.teacher.widths), "sparsity": summary["sparsity"],
                                    **r.result.summary()})
                stages.curves[f"{prefix}/{arm}/round_{r.round:02d}"] = [h["val_accuracy"] for h in r.result.history]
                if r.round in config.rounds:
                    epochs = len(teacher.history) + sum(len(x.result.history) for x in rounds[:r.round])
                    sources[(arm, r.round)] = distill.Teacher(model, r.variables, r.masks)
                    logits[(arm, r.round)] = teacher_arm(t, arm, r.round, summary["sparsity"], epochs, r.result,
                                                         sources[(arm, r.round)])
        for s in config.seeds:
            student(f"{prefix}/student_unpruned_seed{s}", "unpruned", None, t, s, sources[("unpruned", None)],
                    logits[("unpruned", None)])
            for k in config.rounds:
                for criterion in config.criteria:
                    arm = SEQUENCES[criterion]
                    student(f"{prefix}/student_{arm}_round_{k:02d}_seed{s}", arm, k, t, s, sources[(arm, k)],
                            logits[(arm, k)])
    return result


def pool(config: ControlsConfig, parts: Sequence[dict[str, Any]]) -> ControlsResult:
    """One result from the results.json of several runs of the same design on different teacher
    seeds (a run too long for one sitting, split by `--set teacher_seeds=...`). Each part brings
    its teachers and their students; the scratch students, which every part trains alike, come
    from the first part. `config.teacher_seeds` must be the union of the parts' teachers.

    Raises:
      ValueError: a teacher seed is in two parts, or in none.
    """
    seen = set(teacher_owners(parts))
    result = ControlsResult(config, [], [], [], {})
    for i, part in enumerate(parts):
        result.teachers += [TeacherArm(**t) for t in part["teachers"]]
        result.students += [Student(**s) for s in part["students"] if s["arm"] != "scratch" or i == 0]
        result.rows += [r for r in part["rows"] if "student_scratch" not in r["stage"] or i == 0]
        result.curves.update({k: v for k, v in part.get("curves", {}).items()
                              if "student_scratch" not in k or i == 0})
    if seen != set(config.teacher_seeds):
        raise ValueError(f"the parts hold teacher seeds {sorted(seen)}, the config names {sorted(config.teacher_seeds)}")
    return result


def teacher_owners(parts: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> dict[int, int]:
    """Teacher seed -> the index of the part (a run's results.json) that trained it. `names`
    (e.g. the parts' directories) name the parts in the error; default "part 1", "part 2", ...

    Raises:
      ValueError: a teacher seed is in two parts.
    """
    names = names if names is not None else [f"part {i + 1}" for i in range(len(parts))]
    owners: dict[int, int] = {}
    for i, part in enumerate(parts):
        for t in dict.fromkeys(arm["teacher_seed"] for arm in part["teachers"]):
            if t in owners:
                raise ValueError(f"teacher seed {t} is in {names[owners[t]]} and {names[i]}")
            owners[t] = i
    return owners


def load_parts(directories: Sequence[str | Path], run_config: Mapping[str, Any],
               vary: Sequence[str], defaults: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The results.json of finished runs that are parts of the run `run_config` describes: each
    must have its experiment and config but for the keys `vary`. With `defaults` (a `to_dict`
    of the config class's defaults), a key a part lacks (made before the key existed) matches
    while the run keeps its default.

    Raises:
      RunDirError: a directory has no results.json, or another experiment or config.
    """
    parts = []
    for directory in directories:
        path = Path(directory) / "results.json"
        if not path.exists():
            raise RunDirError(f"{directory} has no results.json: pool finished runs only")
        part = json.loads(path.read_text())
        changed = [k for k in diff(upgrade(part.get("config", {})), run_config["config"], defaults=defaults)
                   if k.split(".")[0] not in vary]
        if part.get("experiment") != run_config["experiment"] or changed:
            raise RunDirError(f"{directory} is not a part of this run (differs in: "
                              f"{', '.join(changed) or 'experiment'})")
        parts.append(part)
    return parts
