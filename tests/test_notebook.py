"""The example notebook and README's notebook snippets run as a user would run them."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "prune_then_distill.ipynb"


@pytest.mark.slow(69)
def test_the_example_notebook_runs(tmp_path, monkeypatch, test_env):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # Committed without outputs: what a reader sees is what this run makes.
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    # The kernel is a fresh process: one CPU device, as on a user's laptop; it runs in tmp_path.
    # With a user's XLA settings (pdjax's CPU flags, XLA's level 2), not the suite's level 0
    # (conftest.py): a whole workflow under the settings users get. It costs no time: level 2
    # compiles slower, but the notebook trains 25 epochs, which level 0's code runs slower
    # (this test alone on 2 cores, three alternating pairs: 55.5 s mean, 58.2 s at level 0).
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    for name in test_env:
        monkeypatch.delenv(name, raising=False)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert re.search(r"student from scratch: 0\.\d+; distilled from the pruned teacher: 0\.\d+", text)
    assert "pruned weights still zero: True" in text
    assert any(o.output_type == "display_data" and "image/png" in o.get("data", {})
               for c in nb.cells for o in c.get("outputs", []))  # the plot
    tables = [o["data"]["text/markdown"] for c in nb.cells for o in c.get("outputs", [])
              if o.get("output_type") == "execute_result" and "text/markdown" in o.get("data", {})]
    assert any("agreement with the teacher" in t and "| student, KD from pruned |" in t for t in tables)
    assert list(tmp_path.iterdir()) == []  # workdir=None everywhere: nothing written


def _snippets(heading: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(heading):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.slow(62)
def test_readme_notebook_snippets_run_in_order(tmp_path, monkeypatch, capsys, test_env):
    snippets = _snippets("## In a notebook")
    assert len(snippets) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    capsys.readouterr()  # the fits' epoch lines
    assert namespace["distilled"].test_accuracy > 0.1
    assert (tmp_path / "runs" / "notebook" / "stage.json").exists()
    # "Use the student": load and export the student just trained, then serve it in a process
    # that never imports pdjax.
    load_and_export, serve = _snippets("## Use the student")
    exec(compile(load_and_export, "README.md", "exec"), namespace)  # noqa: S102
    accuracy = json.loads((tmp_path / "runs" / "notebook" / "student" / "result.json").read_text())["test_accuracy"]
    assert capsys.readouterr().out.startswith(f"{accuracy} ('0', '1', '2') True")
    check = "\nimport sys\nassert not any(m.split('.')[0] == 'pdjax' for m in sys.modules)\n"
    done = subprocess.run([sys.executable, "-I", "-c", serve + check], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, **test_env}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(8, 10)"
