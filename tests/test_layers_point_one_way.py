"""Layers point one way: the core library never loads the experiment designs (pdjax.designs), and
no library module, designs included, loads the experiments' command line (pdjax.cli)."""

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pdjax
import pdjax.designs

LIBRARY = sorted(m.name for m in pkgutil.iter_modules(pdjax.__path__) if m.name not in ("cli",))
DESIGNS = sorted(m.name for m in pkgutil.walk_packages(pdjax.designs.__path__, "pdjax.designs."))
# The core library: what the designs are built on.
CORE = ("models", "layers", "data", "masks", "sparsity", "students", "distill", "steps", "train", "pruning",
        "parallel", "checkpoints", "provenance", "stopping", "artifacts", "costs", "render", "stats")


def _loaded_after_importing(names, prefix, test_env):
    """The modules starting with `prefix` a fresh interpreter holds after importing `names`."""
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefix!r}))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, **test_env}, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_no_library_module_loads_the_cli(test_env):
    assert {"train", "steps", "pruning", "designs", "artifacts"} <= set(LIBRARY)
    assert {"pdjax.designs.stage", "pdjax.designs.controls.run", "pdjax.designs.prune_distill.report"} <= set(DESIGNS)
    names = ["pdjax"] + [f"pdjax.{m}" for m in LIBRARY] + DESIGNS
    assert _loaded_after_importing(names, "pdjax.cli", test_env) == []


def test_every_design_has_the_same_rooms():
    for design in ("prune_distill", "controls"):
        rooms = sorted(m.rsplit(".", 1)[-1] for m in DESIGNS if m.startswith(f"pdjax.designs.{design}."))
        assert rooms == ["config", "report", "results", "run"], design


def _imports(path):
    """Every module a source file imports (`import a.b`, `from a.b import c` -> a.b and a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_core_module_imports_the_designs():
    # `import pdjax` loads the designs (the public API includes them), so what a core module
    # imports is read from its source, functions' deferred imports included.
    root = Path(pdjax.__file__).parent
    for name in CORE:
        imported = _imports(root / f"{name}.py")
        assert not [m for m in imported if m.startswith("pdjax.designs")], name
