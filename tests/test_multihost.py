"""Two processes on localhost (JAX's distributed runtime, CPU collectives over gloo) compute
what one process with the same number of devices does."""

import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WORKER = Path(__file__).parent / "helpers" / "multihost_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow(28)
def test_two_processes_train_like_one(tmp_path):
    port = _free_port()
    two = tmp_path / "two.json"
    one = tmp_path / "one.json"
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(two), str(i), "2", "2", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    procs.append(subprocess.Popen([sys.executable, str(WORKER), str(one), "0", "1", "4", "0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        output, _ = p.communicate(timeout=300)
        assert p.returncode == 0, output[-3000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert (a["processes"], a["devices"]) == (1, 4)
    assert (b["processes"], b["devices"]) == (2, 4)
    # One step from the same weights on the same batch: only the order of the reductions differs
    # (gloo between processes, in-process otherwise). A batch split, data order or gradient
    # average that differed between the two would show in the loss or in the update.
    for x, y in zip(a["single_steps"], b["single_steps"]):
        np.testing.assert_allclose(y["loss"], x["loss"], rtol=1e-6)
        for p, q, p0 in zip(x["params"], y["params"], a["initial_params"]):
            p, q, p0 = map(np.asarray, (p, q, p0))
            # Within 0.1% of what the step changed in the layer, plus rounding in leaves that
            # barely move (conv biases before BatchNorm).
            assert np.max(np.abs(q - p)) <= 1e-3 * np.max(np.abs(p - p0)) + 1e-6
    np.testing.assert_allclose(b["evaluation"]["loss"], a["evaluation"]["loss"], rtol=1e-6)
    assert b["evaluation"]["accuracy"] == a["evaluation"]["accuracy"]
    # Chained, the training loop's way: the first step is the same computation as above. Later
    # steps are not compared tightly: BatchNorm on 4 images per device and these 2-channel
    # layers turn a rounding difference into a flipped ReLU or max-pool choice now and then (on
    # one AMD EPYC host at XLA level 0: losses equal to 1e-6 for two steps, then 1e-4 apart and
    # a weight 17% of its change apart after the fourth), so the chained check is that training
    # moved and stayed close.
    np.testing.assert_allclose(b["losses"][0], a["losses"][0], rtol=1e-6)
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=1e-2)
    assert a["losses"][0] != a["losses"][-1]


ROOT = Path(__file__).resolve().parents[1]
# The demo preset, shrunk: every stage (teacher, a pruning round, scratch and KD students) runs.
# A VGG11 teacher as wide as its VGG11 student: teacher and scratch student share one compiled
# step, which keeps the many process launches below short.
SHRUNK_DEMO = ["--preset", "demo", "--set", "teachers=vgg11", "--set", "max_train=200", "--set", "max_test=100",
               "--set", "prune.rounds=1", "--set", "kd_rounds=1", "--set", "log=tensorboard"] + [
    a for k in ("train", "prune.schedule", "student_distill") for a in ("--set", f"{k}.epochs=1", "--set", f"{k}.milestones=")]


CACHE_SETTINGS = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_")


def _launch(out, processes, devices_per_process, *, per_process_env=None, per_process_args=None, cwds=None,
            timeout=400):
    """Starts experiments/vgg19_to_vgg11.py as `processes` processes, the README's way
    (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); returns their exit codes, their
    output and the seconds each took."""
    port = _free_port()
    # The suite's compilation cache and its thresholds (conftest.py) stay: the launches of one
    # test compile the same programs.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "PYTEST_XDIST", "PDJAX_FAULT")) or k.startswith(CACHE_SETTINGS)}
    env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices_per_process), TQDM_DISABLE="1")
    procs, logs, started = [], [], time.monotonic()
    for i in range(processes):
        launch = dict(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes),
                      JAX_PROCESS_ID=str(i)) if processes > 1 else {}
        logs.append(open(Path(out).parent / f"{Path(out).name}.process{i}.{len(list(Path(out).parent.glob('*.log')))}.log", "w+"))
        procs.append(subprocess.Popen(
            # tests/helpers/faults.py runs the script with the PDJAX_FAULT_* faults of per_process_env
            [sys.executable, str(ROOT / "tests" / "helpers" / "faults.py"), str(ROOT / "experiments" / "vgg19_to_vgg11.py"),
             *SHRUNK_DEMO, "--out", str(out),
             *(per_process_args or {}).get(i, ())],
            env={**env, **launch, **(per_process_env or {}).get(i, {})}, cwd=(cwds or {}).get(i, ROOT),
            stdout=logs[-1], stderr=subprocess.STDOUT, text=True))
    seconds: list[float | None] = [None] * processes
    while None in seconds:  # each process's exit time, to see how long a survivor took
        for i, p in enumerate(procs):
            if seconds[i] is None and p.poll() is not None:
                seconds[i] = time.monotonic() - started
        if time.monotonic() - started > timeout:
            for p in procs:
                p.kill()
            raise TimeoutError(f"processes still running after {timeout} s")
        time.sleep(0.05)
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    print(f"{processes} x {devices_per_process} devices: exit {[p.returncode for p in procs]}, "
          f"{[round(t, 1) for t in seconds]} s")
    return [p.returncode for p in procs], outputs, seconds


def _run_script(out, processes, devices_per_process, **options):
    codes, outputs, _ = _launch(out, processes, devices_per_process, **options)
    for code, output in zip(codes, outputs):
        assert code == 0, output[-3000:]
    return json.loads((out / "results.json").read_text())


def _numbers(results):
    """What a run computed, wall-clock and environment fields left out."""
    def strip(row):
        return {k: v for k, v in row.items() if k not in ("train_seconds",)}
    return {"rows": [strip(r) for r in results["rows"]], "students": results["students"],
            "pruning": [strip(r) for r in results["pruning"]], "layer_density": results["layer_density"]}


def _assert_close(a, b, path="results"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        # Accuracies are counts over a few hundred images: one image is 0.01 of 100.
        assert abs(a - b) <= 1e-4 + 1e-4 * abs(a), f"{path}: {a} vs {b}"
    else:
        assert a == b, path


@pytest.mark.slow(107)
def test_experiment_script_on_two_processes_survives_faults_and_matches_one_process(tmp_path):
    """Two processes launched the README's way, through a SIGTERM that reaches only one of them
    and the death of one, end with the numbers of one uninterrupted process with two devices."""
    # A SIGTERM that reaches only process 1 (after its first teacher step): both processes agree,
    # save the same step and exit 143.
    faults = tmp_path / "faults"
    codes, outputs, _ = _launch(faults, 2, 1, per_process_env={1: {"PDJAX_FAULT_TERM": "teacher:1"}})
    assert codes == [143, 143], outputs[0][-2000:] + outputs[1][-2000:]
    assert all("run the same command again" in o for o in outputs)
    # Process 1 dies (SIGKILL) in the scratch student: process 0 does not hang; it stops within
    # seconds with one line saying what happened.
    codes, outputs, seconds = _launch(faults, 2, 1, per_process_env={1: {"PDJAX_FAULT_KILL": "student_scratch:1"}})
    assert codes[1] == -9 and codes[0] == 1, outputs[0][-3000:]
    assert "error: another process of this job stopped answering" in outputs[0]
    assert "run every process's command again to resume" in outputs[0]
    assert seconds[0] - seconds[1] < 10  # measured: 0.1 s after the other process died
    # Both run again: the stages resume from their checkpoints (on two processes) and end with
    # the numbers of one uninterrupted process with two devices.
    two = _run_script(faults, processes=2, devices_per_process=1)
    one = _run_script(tmp_path / "one", processes=1, devices_per_process=2)
    assert (two["environment"]["process_count"], two["environment"]["device_count"]) == (2, 2)
    assert (one["environment"]["process_count"], one["environment"]["device_count"]) == (1, 2)
    assert [r["stage"] for r in two["rows"]] == ["teacher", "student_scratch", "student_kd_unpruned",
                                                 "student_kd_round_01"]
    _assert_close(_numbers(two), _numbers(one))
    # Only the first process writes TensorBoard events: the KD student, trained only by the last
    # two-process launch, has one event file.
    assert len(list((faults / "tensorboard" / "student_kd_round_01").glob("events.*"))) == 1


def _image_zip(path, changed=False):
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for split, n in (("train", 6), ("test", 2)):
            for c in ("cat", "dog"):
                for i in range(n):
                    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                    if changed and (split, c, i) == ("train", "dog", 0):
                        image = 255 - image  # a stale copy: one image differs
                    buffer = io.BytesIO()
                    Image.fromarray(image).save(buffer, format="PNG")
                    zf.writestr(f"{split}/{c}/{i}.png", buffer.getvalue())


@pytest.mark.slow(13)
def test_processes_given_different_run_directories_or_data_stop_at_once(tmp_path):
    # Different --out: refused in every process before anything is written.
    codes, outputs, seconds = _launch(tmp_path / "a", 2, 1, per_process_args={1: ("--out", str(tmp_path / "b"))},
                                      timeout=120)
    assert codes == [2, 2], outputs
    assert all("all processes must share one run directory" in o for o in outputs)
    assert not (tmp_path / "a" / "config.json").exists() and not (tmp_path / "b").exists()
    # Another --set on process 1: refused in every process, naming the key.
    codes, outputs, _ = _launch(tmp_path / "c", 2, 1, per_process_args={1: ("--set", "seed=1")}, timeout=120)
    assert codes == [2, 2], outputs
    assert all("process 1 was given another config than process 0 (differs in: config.seed)" in o
               for o in outputs)
    assert not (tmp_path / "c" / "config.json").exists()
    # The same relative data path holds another data set on process 1 (a stale copy): refused,
    # naming what differs, before any training.
    for name, changed in (("p0", False), ("p1", True)):
        (tmp_path / name).mkdir()
        _image_zip(tmp_path / name / "images.zip", changed)
    codes, outputs, _ = _launch(tmp_path / "run", 2, 1, cwds={0: tmp_path / "p0", 1: tmp_path / "p1"},
                                per_process_args={i: ("--set", "data=folder:images.zip") for i in range(2)},
                                timeout=120)
    assert codes == [2, 2], outputs
    assert all("differs between processes: process 1 has train: same size, different images or labels" in o
               for o in outputs)
    assert not (tmp_path / "run" / "teacher").exists()
