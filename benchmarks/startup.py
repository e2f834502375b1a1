"""Time to first result: how much of a short run is compilation, side by side in one run.

    python benchmarks/startup.py              # prints a markdown table
    python benchmarks/startup.py --epochs 10

Measured, each in a fresh process with its own empty compilation cache (then the same cache,
warm, in a second process):
  - a notebook fit: README's VGG11 at 1/16 on the embedded digits (`pdjax.fit`, in memory):
    the fit's wall time against its training time (epochs x a steady epoch, the median of
    epochs 2..N), and the overhead, the difference; plus the process's import time;
  - the main job: `experiments/vgg19_to_vgg11.py --preset demo`, wall time of the whole command.
Each row counts the XLA compilations the process ran (backend compiles: cache misses) and the
programs it read from the persistent cache. Run it alone: another process on the cores
lengthens every number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Counts JAX's compilation events in the process it is imported into (a child of this script).
COUNTER = r"""
import atexit, json, os, sys, time
import jax
_counts = {"compiles": 0, "compile_seconds": 0.0, "cache_hits": 0}
def _duration(event, seconds, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
        _counts["compiles"] += 1
        _counts["compile_seconds"] += seconds
def _event(event, **kw):
    if event == "/jax/compilation_cache/cache_hits":
        _counts["cache_hits"] += 1
jax.monitoring.register_event_duration_secs_listener(_duration)
jax.monitoring.register_event_listener(_event)
atexit.register(lambda: open(os.environ["PDJAX_BENCH_COUNTS"], "w").write(json.dumps(_counts)))
"""

NOTEBOOK = r"""
import time, json, os, sys
t0 = time.perf_counter()
import pdjax
t1 = time.perf_counter()
data = pdjax.data.load("digits")
model = pdjax.models.get("vgg11", data.num_classes, widths=pdjax.models.scaled_widths("vgg11", 1 / 16))
schedule = pdjax.Schedule(epochs=EPOCHS, batch_size=64, lr=0.05, milestones=(1,), lr_factor=0.2, weight_decay=5e-4)
t2 = time.perf_counter()
result = pdjax.fit(model, data, schedule, seed=0, progress=False)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "fit": t3 - t2, "epochs": [h["seconds"] for h in result.history]}))
"""


def child(code: str, cache: Path, counts: Path, args: list[str] | None = None) -> tuple[float, str]:
    """Runs `code` (or a script with `args`) in a fresh process with the counter; (wall s, stdout)."""
    env = {**os.environ, "PDJAX_COMPILATION_CACHE": str(cache), "PDJAX_BENCH_COUNTS": str(counts),
           "TQDM_DISABLE": "1"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if args is None:
        command = [sys.executable, "-c", COUNTER + code]
    else:
        runner = COUNTER + "import runpy\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
        command = [sys.executable, "-c", runner, *args]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the notebook fit")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for what in ("notebook", "demo"):
            cache = tmp / f"cache_{what}"
            for process in ("first (empty cache)", "second (warm cache)"):
                counts = tmp / "counts.json"
                if what == "notebook":
                    wall, out = child(NOTEBOOK.replace("EPOCHS", str(args.epochs)), cache, counts)
                    fit = json.loads(out.strip().splitlines()[-1])
                    steady = sorted(fit["epochs"][1:])[len(fit["epochs"][1:]) // 2]
                    training = steady * args.epochs
                    row = {"what": f"notebook fit, {args.epochs} epochs", "process": process,
                           "wall": fit["fit"], "training": training, "overhead": fit["fit"] - training,
                           "import": fit["import"]}
                else:
                    out_dir = tmp / f"demo_{process[:5]}"
                    wall, _ = child("", cache, counts, ["experiments/vgg19_to_vgg11.py", "--preset", "demo",
                                                         "--out", str(out_dir)])
                    results = json.loads((out_dir / "results.json").read_text())
                    training = results["train_seconds"]["total"]
                    row = {"what": "demo (vgg19_to_vgg11 --preset demo)", "process": process, "wall": wall,
                           "training": training, "overhead": wall - training, "import": None}
                row.update(json.loads(counts.read_text()))
                rows.append(row)
                print(json.dumps(row), flush=True)
    sys.path.insert(0, str(ROOT))
    from pdjax import render
    from pdjax.designs import common

    print()
    print(common.machine_note(common.environment()))
    print()
    print(render.markdown_table(rows, [
        ("what", "what", "s"), ("process", "process", "s"), ("wall", "wall s", ".1f"),
        ("training", "training s", ".1f"), ("overhead", "wall - training, s", ".1f"),
        ("import", "import pdjax, s", ".1f"), ("compiles", "XLA compilations", "d"),
        ("compile_seconds", "compiling, s", ".1f"), ("cache_hits", "read from the cache", "d")]))
    print("notebook 'training s': the steady epoch (median of epochs 2..N) x epochs; demo 'training s': its "
          "stages' train seconds (results.json train_seconds.total), which include the first epochs' "
          "compilation.")


if __name__ == "__main__":
    main()
