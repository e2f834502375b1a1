"""What each teacher of a finished run transfers, measured from its stages without training:
`python -m pdjax.cli.diagnose RUN_DIR... [--split test|val]`.

For every distilled student of the run (a row of its results.json with a `teacher_stage`), the
student and its teacher are loaded (`pdjax.artifacts.load_stage`) and measured on the split
(`pdjax.diagnostics.for_stages`): the teacher's accuracy, ECE, NLL and soft-label entropy at the
run's KD temperature, the student's accuracy, ECE, NLL, agreement with and KL from its teacher.
Written beside results.json: diagnostics.json, diagnostics.md (one row per student) and
diagnostics.png (student accuracy against agreement, and against its teacher's ECE). A
two-family run (an index of families) is measured family by family. The data are loaded as the
run loaded them (`pdjax.designs.common.load_data` with the run's saved data fields) and must match
the digest the run recorded (its data.json). A directory that is not a finished run, whose
results.json predates the `teacher_stage` record, that is a dry run (two steps on synthetic
data: nothing to measure), or whose data cannot be loaded or changed since the run stops with
one `error:` line and exit status 2 before anything is measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
from pathlib import Path
from typing import Any, Sequence

from pdjax import artifacts, data as data_lib, diagnostics, render
from pdjax.designs import common
from pdjax.sources import DataError

# The data fields of a design's config (`common.DesignConfig`) that `common.load_data` reads.
_DATA_FIELDS = ("seed", "val_fraction", "max_train", "max_test", "data_dir")

COLUMNS: list[render.Column] = [
    ("stage", "student stage", "s"), ("teacher_stage", "teacher stage", "s"),
    ("student_accuracy", "student acc", ".4f"), ("agreement", "agreement", ".4f"),
    ("kl", "KL(teacher ‖ student)", ".4f"), ("student_ece", "student ECE", ".4f"),
    ("teacher_accuracy", "teacher acc", ".4f"), ("teacher_ece", "teacher ECE", ".4f"),
    ("teacher_nll", "teacher NLL", ".4f"), ("teacher_entropy", "soft-label entropy at T", ".3f")]


def _runs(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The run directories under `directory` (itself, or each family of a two-family index),
    each with its results.json, checked."""
    path = directory / "results.json"
    if not path.exists():
        raise ValueError(f"{directory}: no results.json (not a finished run)")
    results = json.loads(path.read_text())
    if "families" in results or "arms" in results:  # an index of families
        return [run for name in results.get("families", results.get("arms")) for run in _runs(directory / name)]
    if results.get("config", {}).get("dry_run"):
        raise ValueError(f"{directory} is a dry run (two steps on synthetic data): there is nothing to measure")
    distilled = [r for r in results.get("rows", []) if "teacher_stage" in r]
    if not distilled:
        raise ValueError(f"{path} names no distilled student's teacher (written before 2026-12-03, or a run "
                         "without KD students): run the experiment's command again, it trains nothing more")
    return [(directory, results)]


def _data(directory: Path, results: dict[str, Any]) -> data_lib.ImageData:
    """The run's data, loaded as the run loaded them, checked against its data.json (a run
    written before data.json existed is not checked)."""
    saved = common.upgrade(results["config"])
    defaults = {f.name: f.default for f in dataclasses.fields(common.DesignConfig) if f.name in _DATA_FIELDS}
    config = types.SimpleNamespace(**{**defaults, **{k: saved[k] for k in _DATA_FIELDS if k in saved}},
                                   data=saved["data"])
    recorded = directory if (directory / "data.json").exists() else None
    return common.load_data(config, "data", recorded, remedy="restore the run's data to measure its stages")


def measure(directory: Path, results: dict[str, Any], split: str = "test",
            data: data_lib.ImageData | None = None) -> list[dict[str, Any]]:
    """One row per distilled student of the run in `directory` (see the module docstring);
    `data`: the run's data when already loaded."""
    data = _data(directory, results) if data is None else data
    images, labels = getattr(data, split).images, getattr(data, split).labels
    temperature = results["config"].get("kd", {}).get("temperature", 10.0)
    teachers: dict[str, Any] = {}
    rows = []
    for row in results["rows"]:
        if "teacher_stage" not in row:
            continue
        name = row["teacher_stage"]
        if name not in teachers:
            stage = artifacts.load_stage(directory / name)
            logits = artifacts.logits(stage, images)
            teachers[name] = (logits, diagnostics.teacher_summary(logits, labels, temperature))
        teacher_logits, teacher = teachers[name]
        student = diagnostics.student_summary(artifacts.logits(artifacts.load_stage(directory / row["stage"]), images),
                                              teacher_logits, labels)
        rows.append({"stage": row["stage"], "teacher_stage": name, "split": split,
                     **{f"student_{k}" if k in ("accuracy", "ece", "nll") else k: v for k, v in student.items()},
                     **{f"teacher_{k}": v for k, v in teacher.items()}})
    return rows


def plot(path: Path, rows: Sequence[dict[str, Any]], title: str) -> None:
    """Student accuracy against agreement with its teacher, and against the teacher's ECE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120, sharey=True)
    for ax, key, label in ((axes[0], "agreement", "student-teacher top-1 agreement"),
                           (axes[1], "teacher_ece", "teacher ECE (15 bins)")):
        ax.scatter([r[key] for r in rows], [100 * r["student_accuracy"] for r in rows], s=14)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("student accuracy, %")
    fig.suptitle(title)
    fig.tight_layout()
    render.save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pdjax.cli.diagnose", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="finished run directories (holding a results.json)")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    args = parser.parse_args(argv)
    try:  # every directory and its data checked before any is measured
        runs = [(d, results, _data(d, results)) for arg in args.dirs for d, results in _runs(arg)]
    except (ValueError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for directory, results, data in runs:
        rows = measure(directory, results, args.split, data)
        title = f"{results.get('experiment', 'run')} ({results.get('preset', '?')}): {args.split} split"
        markdown = (f"# What the teachers transfer: {title}\n\nMeasured from the stages by `python -m "
                    f"pdjax.cli.diagnose` (`pdjax.diagnostics`), KL at T = 1, soft-label entropy at the run's KD "
                    f"temperature.\n\n{render.markdown_table(rows, COLUMNS)}")
        render.write_results(directory, {"split": args.split, "students": rows}, markdown, stem="diagnostics")
        plot(directory / "diagnostics.png", rows, title)
        print(f"{directory}: diagnostics.md, diagnostics.json, diagnostics.png ({len(rows)} students)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
