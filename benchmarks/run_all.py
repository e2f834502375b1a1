"""Runs every benchmark, one after another, and writes one markdown report.

    python benchmarks/run_all.py                     # everything, CPU: about 22 minutes on 2 cores
    python benchmarks/run_all.py --quick             # batch 128 only, no ResNet18
    python benchmarks/run_all.py --out benchmarks/results/cpu.md

Each benchmark runs in its own process (they must not share the machine). PyTorch comparisons
need `pip install -e '.[bench]'`; without torch they are left out and the report says so.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> str:
    print(f"== {script} {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, str(HERE / script), *args], check=True,
                          capture_output=True, text=True)
    # Each script prints its report last, after its progress lines; keep the report.
    text = done.stdout
    start = text.find("Environment:") if "Environment:" in text else text.find("\n###")
    report = text[start:] if start >= 0 else text
    print(report, flush=True)
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 128, VGG19 and VGG11 only")
    parser.add_argument("--out", help="write the markdown report here")
    args = parser.parse_args(argv)
    have_torch = importlib.util.find_spec("torch") is not None
    models = "vgg19,vgg11" if args.quick else "vgg19,vgg11,resnet18"
    batches = "128" if args.quick else "128,512"
    parts = [f"# pdjax benchmarks, {datetime.date.today().isoformat()}\n",
             f"Command: `python benchmarks/run_all.py{' --quick' if args.quick else ''}`\n"]
    step_args = ["--models", models, "--batches", batches] + ([] if have_torch else ["--no-torch"])
    if not have_torch:
        parts.append("PyTorch is not installed (`pip install -e '.[bench]'`): pdjax only.\n")
    parts.append(run("steps.py", *step_args))
    parts.append(run("overheads.py"))
    parts.append(run("xla_flags.py"))
    parts.append(run("conv_forms.py"))
    text = "\n".join(parts)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
