"""Runs an experiment script with a fault injected, for the crash and multi-process tests.

    PDJAX_FAULT_KILL="<stage>:<step>" python tests/helpers/faults.py experiments/X.py ARGS...
    PDJAX_FAULT_TERM="<stage>:<step>" python tests/helpers/faults.py experiments/X.py ARGS...

The process sends itself SIGKILL (or SIGTERM) right after that global train step of the stage
named <stage> (a `pdjax.train.fit` name: "teacher", "prune round 2/2", "student_kd_round_02"),
before any checkpoint of it. Without either variable the script runs as it is. The library
knows nothing of this: the helper passes `fit` an `on_step` callback.
"""

import os
import runpy
import signal
import sys

import jax

import pdjax


def _faults() -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for variable, sig in (("PDJAX_FAULT_KILL", signal.SIGKILL), ("PDJAX_FAULT_TERM", signal.SIGTERM)):
        stage, _, step = os.environ.get(variable, "").rpartition(":")
        if stage and step:
            out.setdefault(stage, {})[int(step)] = sig
    return out


FAULTS = _faults()
_fit = pdjax.train.fit


def fit(*args, **kwargs):
    faults = FAULTS.get(kwargs.get("name", "train"), {})
    if faults:
        def on_step(step, metrics):
            if step in faults:
                jax.block_until_ready(metrics)
                os.kill(os.getpid(), faults[step])
        kwargs["on_step"] = on_step
    return _fit(*args, **kwargs)


# Every module that calls fit by its own name.
for module in (pdjax.train, pdjax.designs.stage, pdjax.pruning):
    module.fit = fit

script, sys.argv = sys.argv[1], sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
