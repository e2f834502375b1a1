"""Draw a finished run's plots again from its results.json: `python -m pdjax.cli.replot DIR...`.

For a prune-then-distill run (vgg19_to_vgg11, resnet18_to_vgg16_mobilenetv2, and each family of
compression_scheme and self_distillation): pruning_density*.png, teacher_vs_sparsity.png,
student_vs_teacher_sparsity.png, and curves.png where results.json holds the curves (runs
from 2026-12-02 on). Nothing is trained or loaded but results.json, so the plots of committed
results follow the current plotting code. A directory without a results.json, or whose
results.json is not a prune-then-distill run's (a controls run, an index of families), stops with
one `error:` line and exit status 2 before anything is drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from pdjax.designs.prune_distill import report

PIPELINE_KEYS = ("teachers", "pruning", "students", "layer_density")


def _read(directory: Path) -> dict[str, Any]:
    path = directory / "results.json"
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{directory}: no results.json") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    missing = [k for k in PIPELINE_KEYS if k not in results]
    if missing:
        families = [p.parent.name for p in sorted(directory.glob("*/results.json"))]
        hint = f"; its families have their own: {', '.join(str(directory / f) for f in families)}" if families else ""
        raise ValueError(f"{path} is not a prune-then-distill run's (no {', '.join(missing)}){hint}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pdjax.cli.replot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="run or results directories holding a results.json")
    args = parser.parse_args(argv)
    try:
        runs = [(d, _read(d)) for d in args.dirs]  # every directory checked before any is drawn
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for directory, results in runs:
        written = report.plot_json(directory, results, report.plot_title(results))
        note = "" if "curves" in results else " (no curves in its results.json: curves.png not drawn)"
        print(f"{directory}: {', '.join(written)}{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
