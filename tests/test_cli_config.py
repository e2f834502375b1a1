"""The experiments' config command line: `--set` overrides and configs saved before keys were
renamed (pdjax.cli.config)."""

import json
import sys
from pathlib import Path

import pytest

from pdjax.cli import config as config_lib
from pdjax.designs import common

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import vgg19_to_vgg11  # noqa: E402
from test_experiments import load_experiment  # noqa: E402

# config.json's "config" as vgg19_to_vgg11 saved it before the pruning and KD values were nested
# (flat keys, its `prune` and `kd` schedules), trimmed to the keys that moved.
OLD_SCHEDULE = {"epochs": 3, "batch_size": 64, "lr": 0.05, "milestones": [1, 2], "lr_factor": 0.1,
                "weight_decay": 0.0002, "momentum": 0.9, "nesterov": True}
OLD = {"prune_rounds": 4, "prune_fraction": 0.2, "kd_rounds": [4], "kd_temperature": 4.0, "kd_alpha": 0.9,
       "prune": OLD_SCHEDULE, "prune_scope": "global", "rewind": "lr", "rewind_epoch": 0, "finetune_lr": 0.001,
       "kd": dict(OLD_SCHEDULE, epochs=12), "data": "digits"}


def test_a_config_saved_with_the_old_keys_reads_in_todays_layout():
    new = common.upgrade(OLD)
    assert new == {"prune": {"schedule": OLD_SCHEDULE, "rounds": 4, "fraction": 0.2, "scope": "global",
                             "rewind": "lr", "rewind_epoch": 0, "finetune_lr": 0.001},
                   "kd": {"temperature": 4.0, "alpha": 0.9}, "student_distill": dict(OLD_SCHEDULE, epochs=12),
                   "kd_rounds": [4], "data": "digits"}
    assert common.upgrade(new) == new  # today's layout is left as it is
    assert OLD["prune_rounds"] == 4  # not changed in place


def test_every_committed_run_directory_config_matches_its_preset_today():
    # A run directory resumes only if its config.json matches the config (runs.prepare): the
    # committed vgg19_to_vgg11 runs, saved with the old keys, still match their presets.
    results = Path(__file__).resolve().parents[1] / "results"
    defaults = {"config": common.to_dict(vgg19_to_vgg11.Config())}
    for name, preset in (("vgg19_to_vgg11_cpu", vgg19_to_vgg11.cpu), ("vgg19_to_vgg11_cpu_t4", vgg19_to_vgg11.cpu_t4)):
        saved = json.loads((results / name / "config.json").read_text())["config"]
        assert "prune_rounds" in saved  # the old layout
        now = {"config": common.to_dict(preset())}
        assert common.diff({"config": common.upgrade(saved)}, now, defaults=defaults) == []
        assert common.diff({"config": saved}, now, defaults=defaults) != []  # what upgrade fixes


def test_set_takes_an_old_key_under_its_new_name_and_says_so(capsys):
    config = config_lib.override(vgg19_to_vgg11.demo(), ["rewind=weight", "kd_alpha=0.5", "prune.epochs=2",
                                                         "prune.milestones=1", "kd.epochs=12", "prune.rounds=3",
                                                         "kd_rounds=3"])
    assert (config.prune.rewind, config.kd.alpha, config.prune.schedule.epochs) == ("weight", 0.5, 2)
    assert (config.student_distill.epochs, config.prune.rounds) == (12, 3)
    notes = capsys.readouterr().err.splitlines()
    assert notes == ["note: --set rewind is now --set prune.rewind", "note: --set kd_alpha is now --set kd.alpha",
                     "note: --set prune.epochs is now --set prune.schedule.epochs",
                     "note: --set prune.milestones is now --set prune.schedule.milestones",
                     "note: --set kd.epochs is now --set student_distill.epochs"]
    with pytest.raises(config_lib.ConfigError, match="unknown config key 'nope'"):
        config_lib.override(vgg19_to_vgg11.demo(), ["nope=1"])
    with pytest.raises(config_lib.ConfigError, match=r"prune.schedule.epochs takes int, got 'x'"):
        config_lib.override(vgg19_to_vgg11.demo(), ["prune.epochs=x"])


def test_the_distilled_schedules_and_the_families_renamed_on_2026_12_03_still_read(capsys):
    # One meaning per word: `kd` is the KD loss; the distilled students' schedules are
    # `*_distill`; the two-family experiments' data branches are `families`.
    saved = {"student_kd": OLD_SCHEDULE, "vgg_kd": OLD_SCHEDULE, "resnet_kd": OLD_SCHEDULE,
             "mobilenet_kd": OLD_SCHEDULE, "arms": ["vgg19"], "kd": {"temperature": 4.0, "alpha": 0.9}}
    assert common.upgrade(saved) == {"student_distill": OLD_SCHEDULE, "vgg_distill": OLD_SCHEDULE,
                                     "resnet_distill": OLD_SCHEDULE, "mobilenet_distill": OLD_SCHEDULE,
                                     "families": ["vgg19"], "kd": {"temperature": 4.0, "alpha": 0.9}}
    selfd = load_experiment("self_distillation")
    config = config_lib.override(selfd.demo(), ["arms=vgg19", "vgg_kd.epochs=2", "vgg_kd.milestones=1"])
    assert config.families == ("vgg19",) and config.family("vgg19").distill.epochs == 2
    assert capsys.readouterr().err.splitlines() == [
        "note: --set arms is now --set families", "note: --set vgg_kd.epochs is now --set vgg_distill.epochs",
        "note: --set vgg_kd.milestones is now --set vgg_distill.milestones"]


def test_overrides_are_typed():
    config = config_lib.override(vgg19_to_vgg11.demo(), [
        "train.epochs=7", "train.milestones=3,5", "max_train=none", "augment=false", "data=folder:/x"])
    assert config.train.epochs == 7 and config.train.milestones == (3, 5)
    assert config.max_train is None and config.augment is False and config.data == "folder:/x"
    with pytest.raises(config_lib.ConfigError, match="train.epochs takes int, got 'many'"):
        config_lib.override(config, ["train.epochs=many"])
    with pytest.raises(config_lib.ConfigError, match="unknown config key 'widht_multiplier'"):
        config_lib.override(config, ["widht_multiplier=2"])
    with pytest.raises(config_lib.ConfigError, match="key=value"):
        config_lib.override(config, ["epochs"])


def test_config_diff_names_nested_keys():
    assert common.diff({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 2, "d": 4}, "e": 0}) == ["b.d", "e"]
