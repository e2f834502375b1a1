"""Two processes on localhost (JAX's distributed runtime, CPU collectives over gloo) compute
what one process with the same number of devices does."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).parent / "helpers" / "multihost_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


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
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=1e-5)
    assert b["accuracy"] == a["accuracy"]
    for x, y in zip(a["params"], b["params"]):
        np.testing.assert_allclose(y, x, atol=1e-5)
    # Training moved the parameters, so the comparison is not of untouched initial values.
    assert a["losses"][0] != a["losses"][-1]
