"""The pruning-controls design (pdjax.controls, experiments/pruning_controls.py) on its demo preset."""

import json

import jax
import pytest

from pdjax import controls, masks, models, pruning
from pdjax.types import SpecError

from test_experiments import load_experiment

# The demo preset on fewer images and epochs: 2 teachers x (magnitude, dense, random) x 1
# round, 2 student seeds, every model one epoch (tests/test_pruning.py runs longer sequences).
ARGV = ["--preset", "demo", "--set", "max_train=320", "--set", "max_test=100", "--set", "rounds=1",
        "--set", "prune.rounds=1"]
for _key in ("teacher_train", "student_scratch", "student_kd"):
    ARGV += ["--set", f"{_key}.epochs=1", "--set", f"{_key}.milestones="]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("controls")
    module = load_experiment("pruning_controls")
    return module, out, module.main(ARGV + ["--out", str(out)])


def test_every_teacher_gets_three_sequences_and_every_arm_its_paired_students(demo):
    module, out, results = demo
    config = module.demo()
    students = results["students"]
    assert sorted({(s["arm"], s["round"]) for s in students}) == sorted(
        [("scratch", None), ("unpruned", None), ("magnitude", 1), ("dense", 1), ("random", 1)])
    assert len(students) == 2 + 2 * 2 * 4  # scratch per seed; per teacher and seed four KD arms
    # Seed s of every arm starts from the same student weights and data order; seeds differ.
    digests = {}
    for s in students:
        record = json.loads((out / s["stage"] / "stage.json").read_text())
        digests.setdefault(s["seed"], set()).add((record["initial_variables"], record["seed"]))
    assert all(len(d) == 1 for d in digests.values()) and digests[0] != digests[1]
    # The sequences: random keeps magnitude's per-layer counts at other positions; dense prunes
    # nothing; all three retrained for the same epochs.
    template = models.init(models.get("vgg11", 10, widths=config.teacher.widths), jax.random.key(0), (32, 32, 3))
    for t in config.teacher_seeds:
        for k in (1,):
            loaded = {arm: pruning.load_round(out / f"teacher_seed{t}" / arm, template, round=k)[1]
                      for arm in ("magnitude", "random", "dense")}
            assert masks.layer_remaining(loaded["random"]) == masks.layer_remaining(loaded["magnitude"])
            assert masks.remaining(loaded["magnitude"]) < masks.total(loaded["magnitude"])
            assert not all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(loaded["random"]),
                                                                jax.tree.leaves(loaded["magnitude"])))
            assert masks.remaining(loaded["dense"]) == masks.total(loaded["dense"])
    arms = {(t["teacher_seed"], t["arm"]): t for t in results["teachers"]}
    for t in config.teacher_seeds:
        assert arms[(t, "magnitude")]["epochs"] == arms[(t, "dense")]["epochs"] == arms[(t, "random")]["epochs"] \
            == 1 + config.prune.schedule.epochs
        assert arms[(t, "dense")]["sparsity"] == 0.0
        assert arms[(t, "random")]["sparsity"] == arms[(t, "magnitude")]["sparsity"] == pytest.approx(0.2, abs=1e-3)


def test_contrasts_are_the_paired_differences_of_the_stages_results(demo):
    _, out, results = demo
    accuracy = {s["stage"]: json.loads((out / s["stage"] / "result.json").read_text())["test_accuracy"]
                for s in results["students"]}
    contrasts = {c["contrast"]: c for c in results["contrasts"]}
    assert list(contrasts) == ["magnitude round 1 - unpruned", "magnitude round 1 - dense round 1",
                               "magnitude round 1 - random round 1", "dense round 1 - unpruned"]
    question = contrasts["magnitude round 1 - dense round 1"]
    expected = [[accuracy[f"teacher_seed{t}/student_magnitude_round_01_seed{s}"]
                 - accuracy[f"teacher_seed{t}/student_dense_round_01_seed{s}"] for s in (0, 1)] for t in (0, 1)]
    assert question["differences"] == expected
    assert question["mean"] == pytest.approx(sum(map(sum, expected)) / 4)
    assert question["df"] == 1 and question["teachers"] == 2 and question["seeds"] == 2
    assert all(c["p_holm"] >= c["p"] for c in contrasts.values() if c["p"] is not None)
    markdown = (out / "results.md").read_text()
    assert markdown.index("Is it the pruning, or the training?") < markdown.index("## Contrasts")
    assert "| magnitude round 1 - dense round 1 |" in markdown
    assert {b["arm"] for b in results["best_epochs"]} == {"scratch", "unpruned", "magnitude round 1",
                                                          "dense round 1", "random round 1"}
    for name in ("controls.png", "curves.png", "results.json", "config.json"):
        assert (out / name).exists(), name


def test_the_same_command_resumes_to_the_same_numbers_and_bad_values_stop_before_training(demo, tmp_path, capsys):
    module, out, results = demo
    again = module.main(ARGV + ["--out", str(out)])
    assert again["students"] == results["students"] and again["contrasts"] == results["contrasts"]
    assert again["train_seconds"] == results["train_seconds"]
    from pdjax.cli import runs

    for bad, words in ((["--set", "rounds=3"], "rounds=(3,) must lie in 1..prune.rounds (1)"),
                       (["--set", "criteria=none,random"], "magnitude included"),
                       (["--set", "prune.fraction=1.5"], "prune.fraction=1.5 must lie in [0, 1)"),
                       (["--set", "kd.alpha=2"], "kd.alpha=2.0 must lie in [0, 1]"),
                       (["--set", "student.name=vgg7"], "model 'vgg7'")):
        with pytest.raises(SystemExit) as exit_info:
            runs.run_cli(module.main, ARGV + bad + ["--out", str(tmp_path / "bad")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and words in err and "\n" not in err
        assert not (tmp_path / "bad").exists()


def test_config_checks_its_values():
    with pytest.raises(SpecError, match="leave it 'magnitude'"):
        controls.ControlsConfig(prune=pruning.PruneSpec(controls.ControlsConfig().prune.schedule, criterion="random"))
    with pytest.raises(SpecError, match="teacher_seeds=\\(0, 0\\)"):
        controls.ControlsConfig(teacher_seeds=(0, 0))
    assert controls.ControlsConfig(criteria=("magnitude", "none")).arms == ("scratch", "unpruned", "magnitude", "dense")


def test_runs_split_by_teacher_pool_into_the_same_report(demo, tmp_path):
    module, out, results = demo
    for t in (0, 1):  # what `--set teacher_seeds=<t>` would have written
        part = {**results, "config": {**results["config"], "teacher_seeds": [t]},
                "teachers": [x for x in results["teachers"] if x["teacher_seed"] == t],
                "students": [s for s in results["students"] if s["teacher_seed"] in (t, None)],
                "rows": [r for r in results["rows"] if not r["stage"].startswith(f"teacher_seed{1 - t}/")]}
        (tmp_path / f"t{t}").mkdir()
        (tmp_path / f"t{t}" / "results.json").write_text(json.dumps(part))
    pooled = module.main(ARGV + ["--pool", str(tmp_path / "t0"), str(tmp_path / "t1"), "--out", str(tmp_path / "all")])
    assert pooled["contrasts"] == results["contrasts"] and len(pooled["students"]) == len(results["students"])
    assert (tmp_path / "all" / "results.md").exists()
    from pdjax.cli import runs

    with pytest.raises(runs.RunDirError, match=r"t0 is not a part of this run \(differs in: kd.alpha\)"):
        module.main(ARGV + ["--set", "kd.alpha=0.5", "--pool", str(tmp_path / "t0"), "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match=r"the parts hold teacher seeds \[0\], the config names \[0, 1\]"):
        module.main(ARGV + ["--pool", str(tmp_path / "t0"), "--out", str(tmp_path / "y")])


def test_overrides_are_checked_once_on_the_final_config():
    # prune.rounds=1 alone would leave rounds=(2,) out of range: the order of --set must not matter.
    from pdjax.cli import config as config_lib

    module = load_experiment("pruning_controls")
    for order in (["prune.rounds=1", "rounds=1"], ["rounds=1", "prune.rounds=1"]):
        built = config_lib.override(module.demo(), order)
        assert (built.rounds, built.prune.rounds) == ((1,), 1)
    with pytest.raises(config_lib.ConfigError, match=r"rounds=\(3,\) must lie in 1..prune.rounds \(2\)"):
        config_lib.override(module.demo(), ["rounds=3"])
