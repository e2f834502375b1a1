"""pdjax's XLA:CPU flag (pdjax/xla_flags.py) on and off, side by side.

    python benchmarks/xla_flags.py

Runs `steps.py` (pdjax only, train and eval steps) twice in fresh processes, because XLA reads
its flags once per process: once as pdjax sets them, once with `PDJAX_XLA_DEFAULTS=0` (XLA's
defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import table

HERE = Path(__file__).resolve().parent


def run(defaults_off: bool, models: str, batches: str) -> list[dict]:
    env = dict(os.environ)
    if defaults_off:
        env["PDJAX_XLA_DEFAULTS"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        subprocess.run([sys.executable, str(HERE / "steps.py"), "--no-torch", "--models", models,
                        "--batches", batches, "--steps", "train,eval", "--json", str(out)],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg19,vgg11")
    parser.add_argument("--batches", default="128")
    args = parser.parse_args(argv)
    ours = run(False, args.models, args.batches)
    xla = run(True, args.models, args.batches)
    rows = []
    for a, b in zip(ours, xla):
        rows.append({"model": a["model"], "batch": a["batch"], "step": a["step"],
                     "XLA defaults img/s": b["pdjax img/s"], "pdjax flags img/s": a["pdjax img/s"],
                     "speed-up": f"{float(a['pdjax img/s'].replace(',', '')) / float(b['pdjax img/s'].replace(',', '')):.2f}x"})
    text = table(rows, "XLA:CPU flags: --xla_cpu_experimental_ynn_fusion_type=dot vs XLA's defaults")
    print(text)
    return text


if __name__ == "__main__":
    main()
