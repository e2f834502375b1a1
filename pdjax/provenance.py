"""What produced a training stage, so that a resumed run is the run that was started.

`pdjax.train.fit` writes `workdir/stage.json` when it starts: the model, the schedule, the
seed, the KD settings, the optimizer, and digests of the initial variables, the masks, the
teacher and the data. Called again on the same directory with any of these changed, it refuses
with `StaleRunError`, naming what differs, instead of returning the old result as if it were the
new one (`restart=True` starts over). A digest is the shapes and dtypes of a tree's arrays plus
a hash of their bytes: cheap (about 0.1 s for 20 M parameters) and exact.

Usage:
    record = {"schedule": dataclasses.asdict(schedule), "variables": provenance.tree_digest(variables)}
    provenance.check_or_write(workdir / "stage.json", record, what=str(workdir))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from pdjax.files import write_json_atomic
from pdjax.masks import is_none, path_str

if TYPE_CHECKING:
    import optax
    from flax import linen as nn

    from pdjax import data as data_lib, distill
    from pdjax.steps import Schedule
    from pdjax.types import Masks, Params, Variables

RESTART_HINT = ("pass restart=True (--restart on an experiment's command line) to start over, or "
                "use another directory")


class StaleRunError(ValueError):
    """A directory holds a run that other settings, data or initial weights produced."""


def tree_digest(tree: Any) -> str | None:
    """A hash of a pytree's structure, leaf shapes, dtypes and bytes (None for None).

    Two trees have the same digest exactly when they have the same paths, shapes, dtypes and
    values (up to hash collisions)."""
    if tree is None:
        return None
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)[0]:
        h.update(path_str(path).encode())
        if leaf is None:
            h.update(b"<none>")
            continue
        value = np.ascontiguousarray(jax.device_get(leaf))
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest()[:16]


_DATA_DIGESTS: dict[int, tuple[Any, dict[str, Any]]] = {}  # id -> (weak reference, digest)


def data_digest(data: Any) -> dict[str, Any]:
    """`pdjax.data.digest` of a data set, computed once per `ImageData` object."""
    from pdjax.data import digest

    cached = _DATA_DIGESTS.get(id(data))
    if cached is None or cached[0]() is not data:
        key = id(data)
        cached = (weakref.ref(data, lambda _: _DATA_DIGESTS.pop(key, None)), digest(data))
        _DATA_DIGESTS[key] = cached
    return cached[1]


def describe_module(module: Any) -> dict[str, Any]:
    """A Flax module's class and settings as JSON (functions and classes by name)."""
    out: dict[str, Any] = {"class": type(module).__qualname__}
    if dataclasses.is_dataclass(module):
        for field in dataclasses.fields(module):
            if field.name in ("parent", "name"):
                continue
            value = getattr(module, field.name)
            out[field.name] = _jsonable(value)
    return out


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(value):
        return getattr(value, "__qualname__", type(value).__qualname__)
    return str(value)


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'schedule.lr: 0.05 there, 0.5 now' for every key whose value differs."""
    a, b = _flatten(saved), _flatten(current)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            out.append(f"{key}: {_short(a.get(key, '<absent>'))} there, {_short(b.get(key, '<absent>'))} now")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


# Keys that records no longer carry, with the value that meant "nothing": a saved record that
# has one with that value matches a current record without it (runs made before the key was
# retired resume); any other saved value still counts as a difference.
RETIRED_KEYS: dict[str, Any] = {
    "snapshot_epochs": [],  # fit's weight-rewind snapshots moved to pdjax.pruning.RewindPoint
}


# Keys added to records later, with the value that reproduces what records without them meant: a
# current record that has one with that value matches a saved record without it (runs made before
# the key existed resume); any other current value still counts as a difference.
ADDED_KEYS: dict[str, Any] = {
    "steps_per_dispatch": 1,  # stage.json: train steps per compiled call (more: a scan, other floats)
    "distillation": None,  # stage.json: a loss other than vanilla KD (`KDSpec.settings()`), or teacher-free
    "criterion": "magnitude",  # pruning.json: the pruning criterion (magnitude was the only one)
    "reference": None,  # pruning.json: the reference masks of random pruning
}


def _without_retired(saved: dict[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in saved.items()
            if not (k in RETIRED_KEYS and k not in current and v == RETIRED_KEYS[k])}


def _without_added(current: Mapping[str, Any], saved: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in current.items()
            if not (k in ADDED_KEYS and k not in saved and v == ADDED_KEYS[k])}


def check_or_write(path: str | Path, record: Mapping[str, Any], *, what: str, write: bool = True) -> None:
    """Compares `record` with the one saved at `path`, or saves it there if there is none.

    A directory made before records existed (no file) adopts `record`; a saved key of
    `RETIRED_KEYS` that still holds its "nothing" value, or a current key of `ADDED_KEYS` that
    holds the value records without it meant, is not a difference.

    Raises:
      StaleRunError: the saved record differs; the message names every difference.
    """
    path = Path(path)
    current = json.loads(json.dumps(record))  # as it will read back
    if path.exists():
        saved = json.loads(path.read_text())
        changes = differences(_without_retired(saved, current), _without_added(current, saved))
        if changes:
            listed = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
            raise StaleRunError(f"{what} holds a run made with other inputs ({listed}); its results would not "
                                f"be this call's: {RESTART_HINT}")
    elif write:
        write_json_atomic(path, current)


def _optimizer_fingerprint(optimizer: optax.GradientTransformation, params: Params) -> str:
    """A user optimizer has no readable settings: it is known by the digest of its first two
    updates of `params` for a fixed gradient (a changed learning rate, decay or moment shows)."""
    grads = jax.tree.map(lambda p: jnp.full(jnp.shape(p), 0.01, jnp.result_type(p)), params)
    opt_state = optimizer.init(params)
    updates = []
    for _ in range(2):
        u, opt_state = optimizer.update(grads, opt_state, params)
        updates.append(u)
    return f"custom optax optimizer {tree_digest(updates)}"


def stage_record(model: nn.Module, data: data_lib.ImageData, schedule: Schedule, *, seed: int,
                 variables: Variables, masks: Masks | None, teacher: distill.Teacher | None,
                 kd: distill.KDSpec, optimizer: optax.GradientTransformation | None,
                 augment: bool, select_best: bool, steps_per_dispatch: int = 1) -> dict[str, Any]:
    """What produces a `fit`: saved as `workdir/stage.json`, compared when it resumes."""
    distilled = None
    if teacher is not None:
        distilled = {"model": describe_module(teacher.model),
                     "variables": tree_digest(teacher.variables), "masks": tree_digest(teacher.masks),
                     "temperature": kd.temperature, "alpha": kd.alpha}
    return {"model": describe_module(model), "schedule": dataclasses.asdict(schedule),
            "optimizer": ("SGD from the schedule" if optimizer is None
                          else _optimizer_fingerprint(optimizer, variables["params"])),
            "seed": seed, "initial_variables": tree_digest(variables),
            "masks": tree_digest(masks), "teacher": distilled, "augment": augment,
            "select_best": select_best, "data": data_digest(data),
            # The loss when it is not the paper's KD (whose T and alpha are the teacher's above).
            "distillation": kd.settings() if (teacher is not None and kd.loss != "kd") or not kd.uses_teacher
            else None,
            "steps_per_dispatch": steps_per_dispatch}
