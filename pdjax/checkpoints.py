"""Checkpoints through orbax-checkpoint, numbered by training step.

Orbax writes each step into a temporary directory and renames it when complete, so a crash
mid-save never leaves a step that `latest_step` would offer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from pdjax.types import PyTree


class Checkpointer:
    """Saves and restores (pytree, JSON metadata) pairs under `directory/<step>/`.

    Usage:
        ckpt = Checkpointer(workdir / "checkpoints")
        ckpt.save(300, {"state": state}, {"history": [...]})
        tree, meta = ckpt.restore({"state": state_template})   # latest step
    """

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The last step saved, or None."""
        return self._manager.latest_step()

    def save(self, step: int, tree: PyTree, meta: dict[str, Any]) -> None:
        """Saves `tree` (arrays) and `meta` (JSON-able) as `step`."""
        self._manager.save(step, args=ocp.args.Composite(
            tree=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))
        self._manager.wait_until_finished()

    def restore(self, template: PyTree, step: int | None = None) -> tuple[PyTree, dict[str, Any]]:
        """Restores into the structure, shapes, dtypes and shardings of `template`."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            tree=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return restored.tree, restored.meta

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def save_tree(path: str | Path, tree: PyTree) -> None:
    """Saves one pytree of arrays (atomically: orbax finalizes a temporary directory)."""
    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree, force=True)
        checkpointer.wait_until_finished()


def load_tree(path: str | Path, template: PyTree) -> PyTree:
    """Loads a pytree saved by `save_tree` into the structure and shapes of `template`."""
    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"no saved tree at {path}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path, abstract)
