"""What each teacher of a finished run transfers, measured from its stages without training:
`python -m pdjax.cli.diagnose RUN_DIR... [--split test|val]`.

For every distilled student of the run (a row of its results.json with a `teacher_stage`), the
student and its teacher are loaded (`pdjax.artifacts.load_stage`) and measured on the split
(`pdjax.diagnostics.for_stages`): the teacher's accuracy, ECE, NLL and soft-label entropy at the
run's KD temperature, the student's accuracy, ECE, NLL, agreement with and KL from its teacher.
Written beside results.json: diagnostics.json, diagnostics.md (one row per student) and
diagnostics.png (student accuracy against agreement, and against its teacher's ECE). A
two-family run (an index of families) is measured family by family. A directory that is not a
finished run, or whose results.json predates the `teacher_stage` record, stops with one
`error:` line and exit status 2 before anything is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from pdjax import artifacts, data as data_lib, diagnostics, render

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
    distilled = [r for r in results.get("rows", []) if "teacher_stage" in r]
    if not distilled:
        raise ValueError(f"{path} names no distilled student's teacher (written before 2026-12-03, or a run "
                         "without KD students): run the experiment's command again, it trains nothing more")
    return [(directory, results)]


def _data(results: dict[str, Any]) -> data_lib.ImageData:
    config = results["config"]
    return data_lib.load(config["data"], val_fraction=config.get("val_fraction", 0.1), split_seed=config.get("seed", 0),
                         max_train=config.get("max_train"), max_test=config.get("max_test"),
                         data_dir=config.get("data_dir"))


def measure(directory: Path, results: dict[str, Any], split: str = "test") -> list[dict[str, Any]]:
    """One row per distilled student of the run in `directory` (see the module docstring)."""
    data = _data(results)
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
    try:
        runs = [run for d in args.dirs for run in _runs(d)]  # every directory checked before any is measured
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for directory, results in runs:
        rows = measure(directory, results, args.split)
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
