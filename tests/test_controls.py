"""The pruning-controls design (pdjax.designs.controls, experiments/pruning_controls.py) on its demo preset."""

import dataclasses
import json

import jax
import pytest

from pdjax import masks, models, pruning, stats
from pdjax.designs import controls
from pdjax.types import SpecError

from test_experiments import load_experiment

# One worker runs the whole module: its tests share the `demo` run (a module fixture, ~40 s,
# which each worker would otherwise make for itself); started early (conftest.py).
pytestmark = [pytest.mark.xdist_group("controls_demo"), pytest.mark.slow(75)]

# The demo preset on fewer images and epochs: 2 teachers x (magnitude, dense, random) x 1
# round, one student seed, every model one epoch (tests/test_pruning.py runs longer sequences;
# tests/test_stats.py the statistics of several seeds), with weight rewinding (every sequence
# rewinds to the teacher's initial weights: its docstring offers `--set prune.rewind=weight`),
# a pre-registered margin and Decoupled KD (`--set kd.loss=dkd`).
ARGV = ["--preset", "demo", "--set", "max_train=320", "--set", "max_test=100", "--set", "rounds=1",
        "--set", "prune.rounds=1", "--set", "seeds=0", "--set", "prune.rewind=weight", "--set", "margin=0.01",
        "--set", "kd.loss=dkd"]
for _key in ("teacher_train", "student_scratch", "student_distill"):
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
    assert len(students) == 1 + 2 * 4  # scratch; per teacher four KD arms
    # The seed's students of every arm and teacher start from the same weights and data order.
    starts = {(json.loads((out / s["stage"] / "stage.json").read_text())["initial_variables"], s["seed"])
              for s in students}
    assert len(starts) == 1  # one initialisation and fit seed for all nine students
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
    # Weight rewinding: the teacher kept its epoch-0 weights, and every sequence's round 1
    # started from them (its pruning.json records their digest).
    for t in config.teacher_seeds:
        assert (out / f"teacher_seed{t}" / "teacher" / "snapshot_0").exists()
        starts = {json.loads((out / f"teacher_seed{t}" / arm / "pruning.json").read_text())["rewind_variables"]
                  for arm in ("magnitude", "dense", "random")}
        assert len(starts) == 1 and None not in starts
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
    expected = [[accuracy[f"teacher_seed{t}/student_magnitude_round_01_seed0"]
                 - accuracy[f"teacher_seed{t}/student_dense_round_01_seed0"]] for t in (0, 1)]
    assert question["differences"] == expected
    assert question["mean"] == pytest.approx(sum(map(sum, expected)) / 2)
    assert question["df"] == 1 and question["teachers"] == 2 and question["seeds"] == 1
    assert all(c["p_holm"] >= c["p"] for c in contrasts.values() if c["p"] is not None and c["role"] == "secondary")
    assert question["role"] == "primary" and question["p_holm"] is None  # decided by the pre-registered rules
    markdown = (out / "results.md").read_text()
    assert markdown.index("Is it the pruning, or the training?") < markdown.index("## Contrasts")
    assert "| magnitude round 1 - dense round 1 |" in markdown
    assert {b["arm"] for b in results["best_epochs"]} == {"scratch", "unpruned", "magnitude round 1",
                                                          "dense round 1", "random round 1"}
    assert "## Pre-registered analysis" in markdown and results["preregistered"]["round"] == 1
    for name in ("controls.png", "student_vs_teacher.png", "curves.png", "results.json", "config.json"):
        assert (out / name).exists(), name


def test_the_same_command_resumes_to_the_same_numbers(demo):
    # (Every key's bad value stops before training: test_experiments.py, BAD_VALUE.)
    module, out, results = demo
    again = module.main(ARGV + ["--out", str(out)])
    assert again["students"] == results["students"] and again["contrasts"] == results["contrasts"]
    assert again["train_seconds"] == results["train_seconds"]


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
        if t == 0:  # a part made before the `log` key existed still pools while the run keeps its default
            del part["config"]["log"]
        else:  # trained on another machine
            part["environment"] = {**results["environment"], "host_cpu_flags": "0ther0flags0"}
        (tmp_path / f"t{t}").mkdir()
        (tmp_path / f"t{t}" / "results.json").write_text(json.dumps(part))
    pooled = module.main(ARGV + ["--pool", str(tmp_path / "t0"), str(tmp_path / "t1"), "--out", str(tmp_path / "all")])
    assert pooled["contrasts"] == results["contrasts"] and len(pooled["students"]) == len(results["students"])
    # The report names the machine of each part, not the pooling process's.
    assert [(p["teacher_seeds"], p["environment"]["host_cpu_flags"]) for p in pooled["parts"]] == [
        ([0], results["environment"]["host_cpu_flags"]), ([1], "0ther0flags0")]
    markdown = (tmp_path / "all" / "results.md").read_text()
    assert "pooled without training from 2 runs" in markdown and "teacher seeds 1 on" in markdown
    assert "flags 0ther0flags0" in markdown and "the table's are the first run's" in markdown
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


def test_every_stage_of_the_demo_run_loads_and_gives_its_test_accuracy(demo):
    # pdjax.artifacts.load_stage on every stage the run made: teachers, the three sequences'
    # rounds, scratch and KD students.
    import numpy as np

    from pdjax import artifacts, data as data_lib

    _, out, _ = demo
    data = data_lib.load("digits", max_train=320, max_test=100)
    stages = sorted(p.parent for p in out.rglob("stage.json"))
    assert len(stages) == 1 + 2 * (1 + 3) + 2 * 4  # scratch, teachers and rounds, KD students
    for path in stages:
        stage = artifacts.load_stage(path)
        predicted = np.argmax(artifacts.logits(stage, data.test.images), -1)
        saved = json.loads((path / "result.json").read_text())["test_accuracy"]
        assert float(np.mean(predicted == data.test.labels)) == pytest.approx(saved, abs=1e-6), path
        assert (stage.masks is not None) == ("/magnitude/" in str(path) or "/random/" in str(path) or "/dense/" in str(path))


def test_the_report_states_what_it_cannot_test():
    # Teachers whose differences are all equal leave no spread: no p-value, and the answer says
    # so rather than failing to print one; one teacher gives a paired test over seeds only.
    config = controls.ControlsConfig(teacher_seeds=(0, 1), seeds=(0,), rounds=(1,), criteria=("magnitude", "none"),
                                     prune=pruning.PruneSpec(controls.ControlsConfig().prune.schedule, rounds=1))

    def student(arm, round, teacher, accuracy):
        return controls.Student(arm, round, teacher, 0, f"t{teacher}/{arm}", accuracy, accuracy, 1, 1)

    students = [student("scratch", None, None, 0.5)]
    for t in (0, 1):
        students += [student("unpruned", None, t, 0.60), student("magnitude", 1, t, 0.62), student("dense", 1, t, 0.61)]
    result = controls.ControlsResult(config, [], students, [], {})
    question = next(c for c in result.contrasts() if c["contrast"] == "magnitude round 1 - dense round 1")
    assert question["mean"] == pytest.approx(0.01) and question["p"] is None and question["p_holm"] is None
    assert "+1.00 points, every teacher's difference the same, no test (2 teacher(s) x 1 seed(s))" in controls.report.answer(result)
    assert "## Contrasts" in controls.report.report(result, "t")
    one = controls.ControlsResult(dataclasses.replace(config, teacher_seeds=(0,)), [], students[:4], [], {})
    assert "no interval (1 teacher(s) x 1 seed(s))" in controls.report.answer(one)


def _synthetic(effect, slope=0.5, teachers=6, seeds=(0, 1), margin=0.01, noise=0.002):
    """A controls result with known effects: student = 0.3 + slope x teacher acc + `effect` for
    magnitude's students + a teacher intercept + seed noise; dense teachers more accurate."""
    import numpy as np

    rng = np.random.default_rng(0)
    config = controls.ControlsConfig(teacher_seeds=tuple(range(teachers)), seeds=seeds, rounds=(3, 7),
                                     margin=margin)
    teachers_, students = [], []
    for t in range(teachers):
        intercept = rng.normal(0, 0.01)
        base = 0.70 + rng.normal(0, 0.01)
        teachers_.append(controls.TeacherArm(t, "unpruned", 0, 0.0, 30, base, base))
        for k in (3, 7):
            for arm, shift in (("magnitude", -0.01), ("dense", 0.01), ("random", -0.03)):
                acc = base + shift + rng.normal(0, 0.005)
                teachers_.append(controls.TeacherArm(t, arm, k, 0.5, 40, acc, acc))
        for s in seeds:
            for arm, k in [("unpruned", None)] + [(a, k) for k in (3, 7) for a in ("magnitude", "dense", "random")]:
                teacher = next(x for x in teachers_ if (x.teacher_seed, x.arm, x.round) == (t, arm, k or 0))
                acc = 0.3 + slope * teacher.test_accuracy + (effect if arm == "magnitude" else 0.0) + intercept \
                    + rng.normal(0, noise)
                students.append(controls.Student(arm, k, t, s, f"t{t}/{arm}{k}_s{s}", acc, acc, 5, 5))
    for s in seeds:
        students.append(controls.Student("scratch", None, None, s, f"scratch{s}", 0.5, 0.5, 5, 5))
    return controls.ControlsResult(config, teachers_, students, [], {})


def test_the_mixed_model_recovers_what_pruning_adds_at_equal_teacher_accuracy():
    result = _synthetic(effect=0.02)
    rows = {(r["round"], r["term"]): r for r in result.mixed_model()}
    for k in (3, 7):
        added, slope = rows[(k, "magnitude - dense")], rows[(k, "teacher test acc")]
        assert added["estimate"] == pytest.approx(0.02, abs=0.004) and added["low"] < 0.02 < added["high"]
        assert slope["estimate"] == pytest.approx(0.5, abs=0.15)
        assert added["teachers"] == 6 and added["students"] == 6 * 2 * 3
    # The paired contrast mixes both: magnitude's teachers are 2 points less accurate here.
    paired = next(c for c in result.contrasts() if c["contrast"] == "magnitude round 7 - dense round 7")
    assert paired["mean"] == pytest.approx(0.02 - 0.5 * 0.02, abs=0.004)


def test_the_preregistered_primary_is_decided_by_its_rules_and_left_out_of_holm():
    helps = _synthetic(effect=0.03)
    plan = helps.preregistered()
    assert plan["contrast"] == "magnitude round 7 - dense round 7" and plan["teachers"] == 6
    assert plan["verdict"] == "pruning helps" and plan["p_sign_flip"] == 2 / 64
    contrasts = helps.contrasts()
    primary = [c for c in contrasts if c.get("role") == "primary"]
    assert [c["contrast"] for c in primary] == ["magnitude round 7 - dense round 7"] and primary[0]["p_holm"] is None
    secondary = [c for c in contrasts if c["role"] == "secondary"]
    assert [c["p_holm"] for c in secondary] == stats.holm([c["p"] for c in secondary])
    same = _synthetic(effect=0.0, slope=0.0, margin=0.02)  # no effect, a 2-point margin
    assert same.preregistered()["verdict"] == "equivalent"
    text = controls.report.report(same, "t")
    assert "## Pre-registered analysis" in text and "**equivalent within ±2.00 points**" in text
    assert "## Pruning beyond teacher accuracy" in text and "magnitude - dense" in text
    assert "Holm's adjustment runs over the secondary contrasts only" in text
    assert controls.report.answer(same).startswith("Pre-registered primary contrast, magnitude round 7 - dense")
    with pytest.raises(SpecError, match="margin=1.5 must lie in"):
        controls.ControlsConfig(margin=1.5)


def test_diagnose_measures_every_distilled_student_from_its_stages_as_the_run_did(demo, tmp_path):
    # `python -m pdjax.cli.diagnose RUN_DIR` reloads each KD student and its teacher and measures
    # them again: the same agreement and KL the run recorded, without training.
    import shutil

    from pdjax.cli import diagnose

    _, out, results = demo
    run = tmp_path / "run"
    shutil.copytree(out, run)
    assert diagnose.main([str(run)]) == 0
    measured = {r["stage"]: r for r in json.loads((run / "diagnostics.json").read_text())["students"]}
    kd = [s for s in results["students"] if s["arm"] != "scratch"]
    assert sorted(measured) == sorted(s["stage"] for s in kd)
    for s in kd:
        assert measured[s["stage"]]["agreement"] == pytest.approx(s["agreement"], abs=1e-9)
        assert measured[s["stage"]]["kl"] == pytest.approx(s["kl"], rel=1e-5)
    assert (run / "diagnostics.png").exists() and "| student stage |" in (run / "diagnostics.md").read_text()
    transfer = {r["arm"]: r for r in results["transfer"]}
    assert set(transfer) == {"unpruned", "magnitude round 1", "dense round 1", "random round 1"}
    assert "## What the teachers transfer" in (out / "results.md").read_text()
    assert diagnose.main([str(tmp_path / "nothing")]) == 2


def test_diagnose_refuses_data_that_changed_since_the_run_and_a_dry_run(demo, tmp_path, capsys):
    # The data are loaded as the run loaded them and checked against the digest the run recorded
    # (data.json): stages measured on other data would give other numbers, silently.
    import shutil

    from pdjax.cli import diagnose

    _, out, _ = demo
    run = tmp_path / "run"
    shutil.copytree(out, run)
    saved = json.loads((run / "data.json").read_text())
    saved["train"]["images"] += 1
    (run / "data.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert diagnose.main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "changed since" in err and "restore the run's data" in err
    assert "--restart" not in err and not (run / "diagnostics.json").exists()
    dry = tmp_path / "dry"
    shutil.copytree(out, dry)
    results = json.loads((dry / "results.json").read_text())
    (dry / "results.json").write_text(json.dumps({**results, "config": {**results["config"], "dry_run": True}}))
    assert diagnose.main([str(dry)]) == 2
    assert "is a dry run" in capsys.readouterr().err and not (dry / "diagnostics.json").exists()


def _split_into_parts(out, results, where):
    # The demo run (teachers 0 and 1) as two parts of one run, as `--set teacher_seeds=<t>` runs
    # make them: each part's results.json holds its teacher's config and students, and its
    # teacher's stages.
    parts = []
    for t in results["config"]["teacher_seeds"]:
        part = where / f"part{t}"
        part.mkdir()
        (part / f"teacher_seed{t}").symlink_to(out / f"teacher_seed{t}", target_is_directory=True)
        mine = {**results, "config": {**results["config"], "teacher_seeds": [t]},
                "teachers": [a for a in results["teachers"] if a["teacher_seed"] == t],
                "students": [s for s in results["students"] if s["teacher_seed"] in (t, None)]}
        (part / "results.json").write_text(json.dumps(mine))
        parts.append(str(part))
    return parts


def test_the_loss_sensitivity_run_distills_the_runs_teachers_with_other_losses(demo, tmp_path, capsys):
    # experiments/kd_loss_sensitivity.py on the demo run cut into two parts: teacher 1's stages
    # loaded from the part that trained it, not retrained; DIST students of the unpruned,
    # magnitude and dense teachers, a teacher-free student, contrasts beside the run's own
    # vanilla-KD ones (here the run distilled with DKD).
    _, out, results = demo
    module = load_experiment("kd_loss_sensitivity")
    overrides = [a for pair in zip(ARGV[2::2], ARGV[3::2]) for a in pair]  # the run's --set pairs
    parts = _split_into_parts(out, results, tmp_path)
    common = ["--preset", "demo", *overrides, "--seeds", "0", "--losses", "dist"]
    for parts_given, teachers, message in (([parts[0], parts[0]], "0", "teacher seed 0 is in"),
                                          (parts, "2", "--teachers 2: no part of --controls trained it")):
        with pytest.raises(SystemExit) as raised:
            module.main(["--controls", *parts_given, *common, "--teachers", teachers, "--out", str(tmp_path / "no")])
        assert raised.value.code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "no").exists()
    record = module.main(["--controls", *parts, *common, "--teachers", "1", "--out", str(tmp_path / "out")])
    kinds = sorted((s["loss"], s["arm"]) for s in record["students"])
    assert kinds == [("dist", "dense"), ("dist", "magnitude"), ("dist", "unpruned"),
                     ("kd (the run's)", "dense"), ("kd (the run's)", "magnitude"), ("kd (the run's)", "unpruned"),
                     ("teacher_free", "teacher_free")]
    assert {r["stage"] for r in record["rows"]} == {"student_teacher_free_seed0", "teacher_seed1/student_unpruned_dist_seed0",
                                                    "teacher_seed1/student_magnitude_dist_seed0",
                                                    "teacher_seed1/student_dense_dist_seed0"}  # no teacher retrained
    run = {s["stage"]: s["test_accuracy"] for s in results["students"]}
    mine = {(s["loss"], s["arm"]): s["test_accuracy"] for s in record["students"]}
    assert mine[("kd (the run's)", "magnitude")] == run["teacher_seed1/student_magnitude_round_01_seed0"]
    assert "magnitude - dense" in (tmp_path / "out" / "results.md").read_text()
