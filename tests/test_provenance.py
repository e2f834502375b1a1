"""No silent stale results: a stage directory records what produced it, and a call with other
inputs is refused (or, with restart=True, retrained), never answered with the old result."""

import dataclasses
import json

import chex
import jax
import numpy as np
import pytest

from pdjax import data as data_lib
from pdjax import distill, masks, models, pruning, provenance, steps, train

ONE_EPOCH = steps.Schedule(epochs=1, batch_size=64, lr=0.05, weight_decay=5e-4)


def _fit(tiny_vgg11, small_digits, workdir, schedule=ONE_EPOCH, **options):
    return train.fit(tiny_vgg11, small_digits, schedule, workdir=workdir, seed=0, progress=False, **options)


def test_a_changed_schedule_is_refused_and_restart_retrains(tiny_vgg11, small_digits, tmp_path):
    first = _fit(tiny_vgg11, small_digits, tmp_path / "nb")
    faster = dataclasses.replace(ONE_EPOCH, lr=0.5)
    with pytest.raises(provenance.StaleRunError, match=r"schedule\.lr: 0\.05 there, 0\.5 now.*restart=True"):
        _fit(tiny_vgg11, small_digits, tmp_path / "nb", faster)
    # Nothing in the directory was touched by the refused call.
    assert json.loads((tmp_path / "nb" / "stage.json").read_text())["schedule"]["lr"] == 0.05
    again = _fit(tiny_vgg11, small_digits, tmp_path / "nb", faster, restart=True)
    in_memory = _fit(tiny_vgg11, small_digits, None, faster)
    assert again.history[0]["train_loss"] != first.history[0]["train_loss"]
    # The restarted run is the new run: the same as one trained in memory, without files.
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in in_memory.history]
    assert again.test_accuracy == in_memory.test_accuracy
    chex.assert_trees_all_equal(again.variables, in_memory.variables)
    assert json.loads((tmp_path / "nb" / "stage.json").read_text())["schedule"]["lr"] == 0.5


def test_in_memory_training_writes_nothing(tiny_vgg11, small_digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _fit(tiny_vgg11, small_digits, None)
    assert list(tmp_path.iterdir()) == []
    assert len(result.history) == 1


def test_a_retired_key_with_its_nothing_value_still_resumes(tmp_path):
    # Runs made before fit's snapshot_epochs moved to pruning.RewindPoint saved "snapshot_epochs": [].
    record = {"seed": 0, "schedule": {"lr": 0.05}}
    (tmp_path / "stage.json").write_text(json.dumps({**record, "snapshot_epochs": []}))
    provenance.check_or_write(tmp_path / "stage.json", record, what="old run")
    (tmp_path / "stage.json").write_text(json.dumps({**record, "snapshot_epochs": [2]}))
    with pytest.raises(provenance.StaleRunError, match=r"snapshot_epochs: \[2\] there, <absent> now"):
        provenance.check_or_write(tmp_path / "stage.json", record, what="old run")


def test_an_added_key_with_its_old_meaning_still_resumes(tmp_path):
    # Pruning directories made before the criterion existed saved no "criterion": magnitude pruning.
    old = {"seed": 0, "fraction": 0.2}
    (tmp_path / "pruning.json").write_text(json.dumps(old))
    provenance.check_or_write(tmp_path / "pruning.json", {**old, "criterion": "magnitude", "reference": None},
                           what="old pruning")
    with pytest.raises(provenance.StaleRunError, match=r"criterion: <absent> there, random now"):
        provenance.check_or_write(tmp_path / "pruning.json", {**old, "criterion": "random", "reference": None},
                               what="old pruning")


def test_other_data_teacher_seed_or_initial_weights_are_refused(tiny_vgg11, small_digits, tmp_path):
    teacher = distill.Teacher(tiny_vgg11, jax.device_get(models.init(tiny_vgg11, jax.random.key(5), (32, 32, 3))))
    _fit(tiny_vgg11, small_digits, tmp_path, teacher=teacher)
    other_teacher = teacher._replace(variables=jax.tree.map(lambda x: x * 1.0001, teacher.variables))
    fewer = data_lib.load("digits", max_train=650)
    cases = [
        (dict(teacher=other_teacher), r"teacher\.variables: "),
        (dict(teacher=teacher, kd=distill.KDSpec(alpha=0.5)), r"teacher\.alpha: 0\.95 there, 0\.5 now"),
        (dict(teacher=None), r"teacher: .* there, null now"),
        (dict(teacher=teacher, seed=1), r"seed: 0 there, 1 now"),
        (dict(teacher=teacher, variables=teacher.variables), r"initial_variables: "),
    ]
    for options, message in cases:
        options = {"seed": 0, **options}
        with pytest.raises(provenance.StaleRunError, match=message):
            train.fit(tiny_vgg11, small_digits, ONE_EPOCH, workdir=tmp_path, progress=False, **options)
    with pytest.raises(provenance.StaleRunError, match=r"data\.train\.images: 630 there, 585 now"):
        train.fit(tiny_vgg11, fewer, ONE_EPOCH, workdir=tmp_path, seed=0, progress=False, teacher=teacher)


def test_pruning_with_another_fraction_is_refused(tiny_vgg11, small_digits, tmp_path):
    dense = jax.device_get(models.init(tiny_vgg11, jax.random.key(0), (32, 32, 3)))
    schedule = dataclasses.replace(ONE_EPOCH, epochs=0)  # rounds only prune; enough for the record
    spec = pruning.PruneSpec(schedule, rounds=1)
    pruning.iterative_pruning(tiny_vgg11, small_digits, spec, variables=dense, workdir=tmp_path, progress=False)
    half = dataclasses.replace(spec, fraction=0.5)
    with pytest.raises(provenance.StaleRunError, match=r"fraction: 0\.2 there, 0\.5 now"):
        pruning.iterative_pruning(tiny_vgg11, small_digits, half, variables=dense, workdir=tmp_path, progress=False)
    rounds = pruning.iterative_pruning(tiny_vgg11, small_digits, half, variables=dense, workdir=tmp_path,
                                       progress=False, restart=True)
    assert masks.density(rounds[0].masks) == pytest.approx(0.5, abs=0.01)
    # More rounds than before continue the same run.
    more = pruning.iterative_pruning(tiny_vgg11, small_digits, dataclasses.replace(half, rounds=2), variables=dense,
                                     workdir=tmp_path, progress=False)
    assert masks.density(more[1].masks) == pytest.approx(0.25, abs=0.01)


def test_a_directory_from_before_records_is_adopted(tiny_vgg11, small_digits, tmp_path):
    first = _fit(tiny_vgg11, small_digits, tmp_path)
    (tmp_path / "stage.json").unlink()
    again = _fit(tiny_vgg11, small_digits, tmp_path)
    assert again.test_accuracy == first.test_accuracy and again.history == first.history
    assert json.loads((tmp_path / "stage.json").read_text())["seed"] == 0


def test_tree_digest_sees_values_dtypes_and_paths():
    a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": None}
    assert provenance.tree_digest(a) == provenance.tree_digest({"w": a["w"].copy(), "b": None})
    nudged = a["w"].copy()
    nudged[1, 2] = np.nextafter(nudged[1, 2], np.float32(10))
    assert provenance.tree_digest({"w": nudged, "b": None}) != provenance.tree_digest(a)
    assert provenance.tree_digest({"w": a["w"].astype(np.float64), "b": None}) != provenance.tree_digest(a)
    assert provenance.tree_digest({"v": a["w"], "b": None}) != provenance.tree_digest(a)
    assert provenance.tree_digest({"w": a["w"].reshape(3, 2), "b": None}) != provenance.tree_digest(a)
    assert provenance.tree_digest(None) is None
