"""The library never loads the experiments' command line (pdjax.cli)."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pdjax

LIBRARY = sorted(m.name for m in pkgutil.iter_modules(pdjax.__path__) if m.name not in ("cli",))


def test_no_library_module_loads_the_cli(test_env):
    assert {"train", "pruning", "controls", "artifacts", "pipeline"} <= set(LIBRARY)
    code = ("import importlib, json, sys\n"
            f"for name in ['pdjax'] + ['pdjax.' + m for m in {LIBRARY!r}]:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pdjax.cli'))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, **test_env}, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
