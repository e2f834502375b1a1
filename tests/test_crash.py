"""Crash safety of a whole experiment: real subprocesses killed with SIGKILL in every stage
(teacher, pruning round, scratch student, KD student) resume with the same command and end
with exactly the results of an uninterrupted run (CPU, same seed)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "vgg19_to_vgg11.py"
FAULTS = ROOT / "tests" / "helpers" / "faults.py"  # runs SCRIPT with PDJAX_FAULT_* faults
# The demo preset, shrunk: 360 training images at batch 64 = 5 steps per epoch, 2 epochs per
# stage, 2 pruning rounds, one pruned teacher distilled; one CPU device. A VGG11 teacher as wide
# as its VGG11 student: teacher and scratch student share one compiled step, which keeps the
# six launches short (what is tested, resuming every kind of stage, does not depend on it).
ARGS = ["--preset", "demo", "--set", "teachers=vgg11", "--set", "max_train=400", "--set", "max_test=100",
        "--set", "prune.rounds=2", "--set", "kd_rounds=2"]
for key in ("train", "prune.schedule", "student_distill"):
    ARGS += ["--set", f"{key}.epochs=2", "--set", f"{key}.milestones=1"]
VOLATILE = ("seconds", "images_per_second", "train_s")


def env(**faults: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("PDJAX_FAULT")}
    return {**out, "TQDM_DISABLE": "1", **faults}  # with the suite's compilation cache (conftest.py)


def run(out: Path, **faults: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FAULTS), str(SCRIPT), *ARGS, "--out", str(out)], env=env(**faults),
                          capture_output=True, text=True, timeout=600)


def stable(value):
    """A results tree without wall-clock fields."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if not any(w in k for w in VOLATILE)}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def histories(out: Path) -> dict:
    return {str(p.relative_to(out)): stable([json.loads(line) for line in p.read_text().splitlines()])
            for p in sorted(out.rglob("metrics.jsonl"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    done = run(out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow(71)
def test_killed_in_every_stage_resumes_to_identical_results(reference, tmp_path):
    out = tmp_path / "run"
    # SIGKILL inside the teacher's second epoch; SIGTERM (a preemption notice) inside the last
    # pruning round.
    for faults, code in (({"PDJAX_FAULT_KILL": "teacher:7"}, -signal.SIGKILL),
                         ({"PDJAX_FAULT_TERM": "prune round 2/2:7"}, 128 + signal.SIGTERM)):
        done = run(out, **faults)
        assert done.returncode == code, (faults, done.returncode, done.stderr[-3000:])
        assert not (out / "results.json").exists()
        if code > 0:
            assert "stopped by SIGTERM at epoch 2, batch 2/5" in done.stderr
            assert "run the same command again" in done.stderr
    # SIGKILL from outside, at whatever moment the scratch student has finished an epoch.
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *ARGS, "--out", str(out)], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trigger = out / "student_scratch" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (trigger.exists() and trigger.read_text().strip()) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    # SIGKILL inside the KD student of the pruned teacher; then the same command to the end.
    done = run(out, PDJAX_FAULT_KILL="student_kd_round_02:6")
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    done = run(out)
    assert done.returncode == 0, done.stderr[-3000:]

    ours = json.loads((out / "results.json").read_text())
    theirs = json.loads((reference / "results.json").read_text())
    for key in ("rows", "students", "pruning", "layer_density"):
        assert stable(ours[key]) == stable(theirs[key]), key
    assert histories(out) == histories(reference)
    assert len(histories(out)) == 6  # teacher, 2 rounds, scratch, KD unpruned, KD round 2
