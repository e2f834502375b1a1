"""pdjax.checkpoints: a saved tree comes back as it was; another model's tree, a missing or an
unreadable one is refused with a message naming what differs (fit's checkpoint rotation,
fallback and full-disk handling are tested through fit in test_train.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pdjax import checkpoints


def _tree(width=4):
    return {"params": {"Conv_0": {"kernel": jnp.arange(3 * 3 * 2 * width, dtype=jnp.float32).reshape(3, 3, 2, width),
                                  "bias": jnp.zeros((width,))}},
            "batch_stats": {"BatchNorm_0": {"mean": jnp.ones((width,), jnp.float32)}}}


def test_a_saved_tree_loads_back_identical_and_a_stage_directory_gives_its_best_variables(tmp_path):
    tree = _tree()
    checkpoints.save_tree(tmp_path / "tree", tree)
    loaded = checkpoints.load_tree(tmp_path / "tree", jax.tree.map(jnp.zeros_like, tree))
    jax.tree.map(np.testing.assert_array_equal, loaded, tree)
    checkpoints.save_tree(tmp_path / "stage" / "best_variables", tree)  # what fit leaves in a stage
    jax.tree.map(np.testing.assert_array_equal, checkpoints.load_variables(tmp_path / "stage", tree), tree)


def test_another_model_missing_or_unreadable_trees_are_refused_by_name(tmp_path):
    checkpoints.save_tree(tmp_path / "tree", _tree(4))
    with pytest.raises(checkpoints.CheckpointMismatchError,
                       match=r"holds a different model or state \(shapes differ: params/Conv_0/kernel is "
                             r"\(3, 3, 2, 4\) there, \(3, 3, 2, 8\) here"):
        checkpoints.load_tree(tmp_path / "tree", _tree(8))
    other = _tree(4)
    other["params"]["Dense_0"] = {"kernel": jnp.zeros((4, 10))}
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"missing there: params/Dense_0/kernel"):
        checkpoints.load_tree(tmp_path / "tree", other)
    with pytest.raises(FileNotFoundError, match="no saved tree at"):
        checkpoints.load_tree(tmp_path / "nothing", _tree())
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "_METADATA").write_text("not json")
    with pytest.raises(checkpoints.CheckpointError, match=r"junk (is not a readable pdjax/orbax tree|has no readable "
                                                          r"description of its arrays)"):
        checkpoints.load_tree(tmp_path / "junk", _tree())
