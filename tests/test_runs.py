"""pdjax.cli.runs: a run directory belongs to one config (a field added since is accepted at
its default, another value refused until --restart) and to one data set."""

import json

import pytest

from pdjax import data
from pdjax.designs import common
from pdjax.cli import runs

from test_data import write_tree


def test_a_run_directory_from_before_a_new_config_field_is_still_accepted():
    old = {"config": {"seed": 0, "train": {"epochs": 3}}}
    new = {"config": {"seed": 0, "train": {"epochs": 3}, "compute_dtype": "float32"}}
    defaults = {"config": {"seed": 0, "train": {"epochs": 200}, "compute_dtype": "float32"}}
    assert common.diff(old, new, defaults=defaults) == []
    changed = {"config": {**new["config"], "compute_dtype": "bfloat16"}}
    assert common.diff(old, changed, defaults=defaults) == ["config.compute_dtype"]
    assert common.diff(old, new) == ["config.compute_dtype"]  # without defaults: every new key


def test_a_run_directory_of_another_config_is_refused_and_restart_starts_over(tmp_path):
    out = runs.prepare(tmp_path / "run", {"config": {"seed": 0}})
    (out / "teacher").mkdir()
    assert runs.prepare(out, {"config": {"seed": 0}}) == out and (out / "teacher").exists()  # same config: reused
    with pytest.raises(runs.RunDirError, match=r"differs in: config.seed\).*--restart"):
        runs.prepare(out, {"config": {"seed": 1}})
    assert (out / "teacher").exists()  # nothing deleted by a refusal
    runs.prepare(out, {"config": {"seed": 1}}, restart=True)
    assert not (out / "teacher").exists()
    assert json.loads((out / "config.json").read_text()) == {"config": {"seed": 1}}


def test_a_run_refuses_data_that_changed_since_it_started(tmp_path):
    from types import SimpleNamespace

    write_tree(tmp_path / "images", size=(32, 32))
    config = SimpleNamespace(data=f"folder:{tmp_path / 'images'}", val_fraction=0.0, seed=0, max_train=None,
                             max_test=None)
    first = common.load_data(config, "data", tmp_path / "run")
    assert json.loads((tmp_path / "run" / "data.json").read_text()) == data.digest(first)
    common.load_data(config, "data", tmp_path / "run")  # unchanged: accepted
    removed = sorted((tmp_path / "images" / "train" / "cat").iterdir())[0]
    removed.unlink()
    with pytest.raises(data.DataError, match=r"changed since .* was started \(train: 12 -> 11 images\).*--restart"):
        common.load_data(config, "data", tmp_path / "run")
