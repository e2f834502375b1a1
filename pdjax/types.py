"""Type aliases shared across pdjax."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import jax

PRNGKey = jax.Array
Array = jax.Array
PyTree = Any
# Flax parameter tree: nested dicts of arrays.
Params = Mapping[str, Any]
# Flax variables: {"params": Params, "batch_stats": ...}.
Variables = Mapping[str, Any]
# A mask tree has the structure of the parameters it masks: a boolean array for every
# prunable kernel, None for every leaf that is never pruned.
Masks = Mapping[str, Any]
# Channel widths of a model: a VGG plan's conv widths, a ResNet's per-stage widths, ...
Widths = Sequence[int]
Metrics = dict[str, float]


class SpecError(ValueError):
    """A setting out of range, found when its spec (a schedule, a pruning or KD spec) is built,
    before anything trains. The experiment CLI prints it as one `error:` line (exit 2)."""


def check(checks: Iterable[tuple[bool, str]]) -> None:
    """Raises `SpecError` with the message of the first `(ok, message)` whose `ok` is false: the
    checks of a spec's `__post_init__`, each message naming its field ("epochs=-1 must be >= 0";
    the experiment CLI prefixes the field's place in the config, "train.epochs=-1 ...")."""
    for ok, message in checks:
        if not ok:
            raise SpecError(message)
