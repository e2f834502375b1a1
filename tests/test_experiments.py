import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import pdjax
from pdjax.cli import runs
from pdjax.train import Schedule

ROOT = Path(__file__).resolve().parents[1]


def load_experiment(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


SMOKE = ["--preset", "demo", "--set", "max_train=400", "--set", "max_test=100", "--set", "prune.rounds=2",
         "--set", "kd_rounds=2"]


def one_epoch(*keys):
    return [a for k in keys for a in ("--set", f"{k}.epochs=1", "--set", f"{k}.milestones=")]


# Smoke tests that train the same teacher on the same images (SMOKE) run one after the other on
# one worker: the later ones reuse the first one's compiled steps (run side by side, each
# worker compiled them for itself; the steps bake in the data's mean and std, so the images
# must be the same too).
VGG19_SMOKES = pytest.mark.xdist_group("vgg19_smokes")
RESNET18_SMOKES = pytest.mark.xdist_group("resnet18_smokes")


@pytest.fixture(scope="module")
def vgg19_to_vgg11():
    return load_experiment("vgg19_to_vgg11")


def test_presets_follow_the_paper(vgg19_to_vgg11):
    paper = vgg19_to_vgg11.paper()
    assert paper.data == "tfds:cifar100" and paper.teachers == ("vgg19", "vgg19_dbl") and paper.student == "vgg11"
    assert paper.train == Schedule(epochs=200, batch_size=128, lr=0.1, milestones=(60, 120, 160),
                                   lr_factor=0.2, weight_decay=5e-4, momentum=0.9, nesterov=True)
    assert paper.prune.schedule == Schedule(epochs=130, batch_size=128, lr=0.1, milestones=(39, 84),
                                            lr_factor=0.1, weight_decay=2e-4, momentum=0.9, nesterov=True)
    assert (paper.prune.rounds, paper.prune.fraction, paper.prune.scope, paper.prune.rewind) == (7, 0.2, "global", "lr")
    assert (paper.kd.temperature, paper.kd.alpha) == (10.0, 0.95)
    cpu = vgg19_to_vgg11.cpu()
    assert cpu.data == "folder:../shared/datasets/cifar10-jpeg.zip"  # relative: no absolute path in results
    assert cpu.teachers == ("vgg19", "vgg19_dbl") and cpu.seeds == (0, 1, 2)
    assert vgg19_to_vgg11.demo().data == "digits"
    selfd = load_experiment("self_distillation").cpu()
    assert selfd.vgg_data == selfd.resnet_data == "folder:../shared/datasets/cifar10-jpeg.zip"
    assert selfd.seeds == (0, 1, 2) and selfd.model_options() == {"resnet18": {"stem_width": 4}}
    for name in ("vgg19", "resnet18"):  # scratch and KD students share one schedule
        assert selfd.family(name).scratch == selfd.family(name).distill


@pytest.mark.slow(43)
@VGG19_SMOKES
def test_demo_smoke_runs_resumes_and_refuses_a_changed_config(vgg19_to_vgg11, tmp_path, capsys):
    # The same data and schedules as the other experiments' smoke tests below, so that they
    # reuse this test's compiled steps (the tests share a compilation cache).
    argv = SMOKE + one_epoch("train", "prune.schedule", "student_distill") + ["--set", "log=tensorboard", "--out", str(tmp_path)]
    results = vgg19_to_vgg11.main(argv)
    assert [r["stage"] for r in results["rows"]] == [
        "teacher", "student_scratch", "student_kd_unpruned", "student_kd_round_02"]
    # --set log=tensorboard: one TensorBoard run per stage (tests/test_tensorboard.py checks the content)
    logged = sorted(str(p.parent.relative_to(tmp_path / "tensorboard")) for p in (tmp_path / "tensorboard").rglob("events.*"))
    assert logged == ["pruning/round_01", "pruning/round_02", "student_kd_round_02", "student_kd_unpruned",
                      "student_scratch", "teacher"]
    assert [r["teacher"] for r in results["students"]] == ["none (scratch)", "vgg19 unpruned", "vgg19 pruned"]
    assert results["students"][2]["teacher_sparsity"] == pytest.approx(0.36, abs=1e-4)
    # Every row of the report is its stage's own result, and each student its stage's row.
    for r in results["rows"]:
        saved = json.loads((tmp_path / r["stage"] / "result.json").read_text())
        assert (r["test_accuracy"], r["epochs"]) == (saved["test_accuracy"], 1)
    by_stage = {r["stage"]: r["test_accuracy"] for r in results["rows"]}
    assert [s["test_accuracies"] for s in results["students"]] == [
        [by_stage["student_scratch"]], [by_stage["student_kd_unpruned"]], [by_stage["student_kd_round_02"]]]
    assert [r["round"] for r in results["pruning"]] == [0, 1, 2]
    assert [round(r["sparsity"], 3) for r in results["pruning"]] == [0.0, 0.2, 0.36]
    assert list(results["layer_density"]["vgg19"]) == ["teacher", "round 1 (20%)", "round 2 (36%)"]
    assert results["rows"][0]["params"] > results["rows"][1]["params"]
    # The time summary counts the teacher once (the pruning table repeats it as round 0).
    seconds = results["train_seconds"]
    assert seconds["teachers"] == results["rows"][0]["train_seconds"] == results["pruning"][0]["train_seconds"] > 0
    assert seconds["pruning"] == pytest.approx(sum(r["train_seconds"] for r in results["pruning"][1:]))
    assert seconds["students"] == pytest.approx(sum(r["train_seconds"] for r in results["rows"][1:]))
    assert seconds["pruning"] > 0 and seconds["students"] > 0
    assert seconds["total"] == pytest.approx(seconds["teachers"] + seconds["pruning"] + seconds["students"])
    assert results["environment"]["device_count"] == 8 and results["config"]["seed"] == 0
    for name in ("results.md", "results.json", "curves.png", "config.json", "pruning_density.png",
                 "teacher_vs_sparsity.png", "teacher/result.json", "student_scratch/metrics.jsonl",
                 "pruning/rounds.json", "pruning/round_02/teacher", "student_vs_teacher_sparsity.png",
                 "student_kd_round_02/result.json"):
        assert (tmp_path / name).exists(), name
    markdown = (tmp_path / "results.md").read_text()
    assert "| teacher | vgg19 |" in markdown and "| 2 | 0.360 |" in markdown
    assert "| Conv_0/kernel | 3x3x3x4 |" in markdown
    assert f"{seconds['total']:,.0f} s ({seconds['total'] / 3600:.2f} h) in all" in markdown
    # The machine is recorded: on the CPU backend another CPU model can give other floats.
    env = results["environment"]
    assert env["host_cpu"] and env["host_cpu_count"] >= env["usable_cores"] >= 1 and env["versions"]["pillow"]
    assert f"{env['usable_cores']} usable by the run" in markdown
    assert f"8 x cpu (cpu backend), host CPU {env['host_cpu']}" in markdown
    # Running the same command again trains nothing and reports the same numbers.
    again = vgg19_to_vgg11.main(argv)
    assert [r["test_accuracy"] for r in again["rows"]] == [r["test_accuracy"] for r in results["rows"]]
    assert again["pruning"] == results["pruning"]
    assert [r["train_seconds"] for r in again["rows"]] == [r["train_seconds"] for r in results["rows"]]
    # A different config in the same directory is refused, naming the field.
    with pytest.raises(runs.RunDirError, match=r"differs in: config.train.lr"):
        vgg19_to_vgg11.main(argv + ["--set", "train.lr=0.2"])


@pytest.mark.slow(41)
@VGG19_SMOKES
def test_two_teachers_share_one_scratch_student_and_students_have_their_own_seeds(vgg19_to_vgg11, tmp_path):
    argv = SMOKE + one_epoch("train", "prune.schedule", "student_distill") + [
        "--set", "teachers=vgg19,vgg11", "--set", "seeds=0,1", "--out", str(tmp_path)]
    results = vgg19_to_vgg11.main(argv)
    stages = [r["stage"] for r in results["rows"]]
    assert stages == ["vgg19/teacher", "student_scratch_seed0", "student_scratch_seed1",
                      "vgg19/student_kd_unpruned_seed0", "vgg19/student_kd_unpruned_seed1",
                      "vgg19/student_kd_round_02_seed0", "vgg19/student_kd_round_02_seed1",
                      "vgg11/teacher", "vgg11/student_kd_unpruned_seed0", "vgg11/student_kd_unpruned_seed1",
                      "vgg11/student_kd_round_02_seed0", "vgg11/student_kd_round_02_seed1"]
    assert [(s["teacher_model"], s["teacher_sparsity"] and round(s["teacher_sparsity"], 2))
            for s in results["students"]] == [
        (None, None), ("vgg19", 0.0), ("vgg19", 0.36), ("vgg11", 0.0), ("vgg11", 0.36)]
    assert all(len(s["test_accuracies"]) == 2 for s in results["students"])
    assert {p["teacher"] for p in results["pruning"]} == {"vgg19", "vgg11"}
    assert set(results["layer_density"]) == {"vgg19", "vgg11"}
    for name in ("vgg19/pruning/round_02/teacher", "vgg11/pruning/round_02/teacher",
                 "pruning_density_vgg19.png", "pruning_density_vgg11.png"):
        assert (tmp_path / name).exists(), name
    markdown = (tmp_path / "results.md").read_text()
    assert "## Seed-by-seed comparisons" in markdown
    assert "| vgg11 | KD from vgg11 pruned 36% | KD from vgg11 unpruned |" in markdown
    # Students train with their own seeds: the scratch VGG11 of seed 0 is not initialised like
    # the teacher (seed 0), and its two seeds differ.
    first = [json.loads(line) for line in (tmp_path / "student_scratch_seed0" / "metrics.jsonl").read_text().splitlines()]
    second = [json.loads(line) for line in (tmp_path / "student_scratch_seed1" / "metrics.jsonl").read_text().splitlines()]
    assert first[0]["train_loss"] != second[0]["train_loss"]


@pytest.fixture(scope="module")
def vgg11_tree(tmp_path_factory):
    """A saved VGG11 (demo widths): not a VGG19 teacher."""
    from pdjax import checkpoints, models

    model = models.get("vgg11", 10, widths=models.scaled_widths("vgg11", 1 / 16))
    path = tmp_path_factory.mktemp("trees") / "vgg11"
    checkpoints.save_tree(path, models.init(model, jax.random.key(0), (32, 32, 3)))
    return path


def test_cli_bad_input_in_a_process_of_its_own_is_one_line_and_exit_2(tmp_path):
    # The script's own process (`__main__`, the interpreter's exit status); the other bad inputs
    # are tested in-process below, through the same `run_cli`.
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "vgg19_to_vgg11.py"), "--preset", "huge",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: unknown preset 'huge'") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, message", [
    ("train.epochs=x", "train.epochs takes int, got 'x'"),
    ("nope=1", "unknown config key 'nope'"),
    ("student_distill.batch_size=12", "student_distill.batch_size=12 does not split over the 8 devices; use a multiple of 8"),
    ("teacher_checkpoint={vgg11_tree}", "holds a different model or state"),
])
def test_cli_bad_input_is_one_line_and_exit_2(setting, message, tmp_path, vgg11_tree, vgg19_to_vgg11, capsys):
    assert jax.device_count() == 8  # the batch-size case
    with pytest.raises(SystemExit) as stopped:
        runs.run_cli(vgg19_to_vgg11.main, ["--preset", "demo", "--set", setting.replace("{vgg11_tree}", str(vgg11_tree)),
                                           "--set", "teachers=vgg19", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    # Nothing was trained, and nothing of an earlier run would have been touched.
    assert not (tmp_path / "run" / "teacher").exists()


# A value just outside its declared valid range for every key of every experiment's config, by
# the key's last name (a full dotted key where one name means two things): a schedule that trains
# nothing (epochs 0), a milestone at 0, a subset that cannot hold one batch (max_train 1), a
# width or count at 0, a fraction or probability at 1. Each must stop the script with exit 2 and
# one `error:` line naming the key, before anything is written or trained.
BAD_VALUE = {
    "epochs": "0", "batch_size": "0", "lr": "-0.001", "milestones": "0", "lr_factor": "0", "weight_decay": "-0.001",
    "momentum": "1", "nesterov": "maybe", "augment": "maybe", "seed": "-1", "seeds": "0,0", "teacher_seeds": "1,1",
    "val_fraction": "1", "max_train": "1", "max_test": "0", "eval_batch_size": "0", "cost_batch_size": "0",
    "width_multiplier": "0", "student_width_multiplier": "0", "vgg_width_multiplier": "0",
    "mobilenet_width_multiplier": "0", "stem_width": "0", "resnet_stem_width": "0",
    "kd_rounds": "0", "rounds": "0", "prune.rounds": "0", "temperature": "0", "alpha": "1.001",
    "criterion": "bogus", "fraction": "1", "rewind": "bogus", "rewind_epoch": "-1", "finetune_lr": "0",
    "scope": "everywhere", "compute_dtype": "float8", "dtypes": "float8", "log": "bogus",
    "data": "nowhere", "vgg_data": "folder:/no/such.zip", "resnet_data": "tfds",
    "teacher_checkpoint": "/no/such/teacher", "name": "nomodel", "teachers": "nomodel", "student": "nomodel",
    "models": "vgg11,vgg11", "students": "vgg11", "families": "vgg13", "student_arms": "kd_sometimes",
    "criteria": "random", "width_rules": "uniform", "student_train_size": "1", "margin": "1",
    "loss": "fitnet", "beta": "-0.001", "gamma": "-0.001", "correct_probability": "1", "steps_per_dispatch": "0",
    "dry_run": "maybe",
}
# Keys with no bad value, and why.
NO_BAD_VALUE = {
    "data_dir": "any directory: tensorflow-datasets makes it, and reads it only for a tfds source",
}
EXPERIMENTS = ["vgg19_to_vgg11", "resnet18_to_vgg16_mobilenetv2", "self_distillation", "compression_scheme",
               "pruning_controls", "mixed_precision"]


def _leaf_keys(config, prefix=""):
    """Every settable dotted key of a config (a schedule that is None here has no sub-keys)."""
    import dataclasses

    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from _leaf_keys(value, f"{prefix}{field.name}.")
        elif not (value is None and "Schedule" in str(field.type)):
            yield f"{prefix}{field.name}"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_config_key_has_a_bad_value_that_stops_before_anything_runs(experiment, tmp_path, capsys,
                                                                         monkeypatch):
    import pdjax

    module = load_experiment(experiment)
    keys = list(_leaf_keys(module.PRESETS["demo"]()))
    missing = [k for k in keys if k not in BAD_VALUE and k.rsplit(".", 1)[-1] not in BAD_VALUE
               and k not in NO_BAD_VALUE]
    assert not missing, f"give these keys a bad value in BAD_VALUE (or a reason in NO_BAD_VALUE): {missing}"

    def trains(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(pdjax.train, "fit", trains)
    for key in keys:
        if key in NO_BAD_VALUE:
            continue
        bad = BAD_VALUE.get(key, BAD_VALUE.get(key.rsplit(".", 1)[-1]))
        out = tmp_path / key
        with pytest.raises(SystemExit) as stopped:
            runs.run_cli(module.main, ["--preset", "demo", "--set", f"{key}={bad}", "--out", str(out)])
        err = capsys.readouterr().err
        assert stopped.value.code == 2, (key, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and key in err, (key, err)
        assert not out.exists(), key


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_override_the_docstring_offers_builds_on_every_preset(experiment):
    import re

    from pdjax.cli import config as config_lib

    module = load_experiment(experiment)
    # Each example is a `...` span or a command line; its --set assignments go together.
    examples = re.findall(r"`([^`]*--set [^`]*)`", module.__doc__) + [
        line for line in module.__doc__.splitlines() if line.strip().startswith("python ") and "--set" in line]
    offered = {tuple(a for a in re.findall(r"--set\s+([\w.]+=\S*)", example) if a != "key=value")
               for example in examples} - {()}
    assert offered, "the docstring offers no --set override"
    for name, preset in module.PRESETS.items():
        for assignments in sorted(offered):
            config_lib.override(preset(), list(assignments))  # a refused override raises ConfigError


def test_cli_unwritable_output_is_one_line_and_nonzero(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "vgg19_to_vgg11.py"), "--preset", "demo",
                           "--out", str(blocker / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "Not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert blocker.read_text() == "not a directory"


@pytest.mark.slow(37)
@RESNET18_SMOKES
def test_self_distillation_smoke(tmp_path):
    module = load_experiment("self_distillation")
    # The vgg19 family runs the same pipeline as vgg19_to_vgg11 (tested above); the resnet18 family
    # here, with weight rewinding (the docstrings' `--set prune.rewind=weight`).
    results = module.main(SMOKE + one_epoch("resnet_train", "resnet_prune", "resnet_distill")
                          + ["--set", "families=resnet18", "--set", "resnet_stem_width=2",
                             "--set", "prune.rewind=weight", "--out", str(tmp_path)])
    assert set(results) == {"resnet18"}
    # Every round rewound to the teacher's epoch-0 weights, kept while it trained.
    assert (tmp_path / "resnet18" / "teacher" / "snapshot_0").exists()
    pruning_record = json.loads((tmp_path / "resnet18" / "pruning" / "pruning.json").read_text())
    assert pruning_record["rewind"] == "weight" and pruning_record["rewind_variables"] is not None
    # The narrowed stem reaches the teacher and every student.
    for stage in ("teacher", "student_scratch", "student_kd_round_02"):
        record = json.loads((tmp_path / "resnet18" / stage / "stage.json").read_text())
        assert record["model"]["stem_width"] == 2, stage
    for name, r in results.items():
        assert [s["teacher"] for s in r["students"]] == ["none (scratch)", f"{name} unpruned", f"{name} pruned"]
        assert all(s["model"] == name for s in r["students"])
        assert (tmp_path / name / "results.md").exists() and (tmp_path / name / "student_vs_teacher_sparsity.png").exists()
    assert "[resnet18](resnet18/results.md)" in (tmp_path / "results.md").read_text()


@pytest.mark.slow(48)
@RESNET18_SMOKES
def test_resnet18_to_vgg16_mobilenetv2_smoke(tmp_path):
    module = load_experiment("resnet18_to_vgg16_mobilenetv2")
    # The resnet18 student runs the same code as the self-distillation family (tested below).
    # MobileNetV2 only: a VGG16 student runs the same pipeline code as vgg19_to_vgg11's VGG11.
    results = module.main(SMOKE + one_epoch("teacher_train", "prune.schedule", "mobilenet_scratch", "mobilenet_distill")
                          + ["--set", "students=mobilenetv2", "--set", "resnet_stem_width=2",
                             "--set", "mobilenet_width_multiplier=0.03125", "--set", "kd.loss=teacher_free",
                             "--out", str(tmp_path)])
    assert [s["model"] for s in results["students"]] == ["mobilenetv2"] * 3
    widths = {r["stage"]: r["widths"] for r in results["rows"]}
    assert widths["teacher"] == [4, 8, 16, 32]  # the demo's 1/16 of (64, 128, 256, 512)
    assert widths["mobilenetv2_scratch"] == [1, 1, 1, 1, 2, 3, 5, 10, 40]  # its own 1/32
    assert "stand in for the paper's Tiny-ImageNet" in (tmp_path / "results.md").read_text()
    stages = [r["stage"] for r in results["rows"]]
    assert stages[:2] == ["teacher", "mobilenetv2_scratch"] and "mobilenetv2_kd_round_02" in stages
    assert results["config"]["teacher_train"]["epochs"] == 1
    record = json.loads((tmp_path / "teacher" / "stage.json").read_text())
    assert record["model"]["stem_width"] == 2  # the narrowed stem reaches the teacher
    # Teacher-free KD: the "distilled" students train on the virtual teacher, with no teacher.
    distilled = json.loads((tmp_path / "mobilenetv2_kd_round_02" / "stage.json").read_text())
    assert distilled["teacher"] is None and distilled["distillation"]["loss"] == "teacher_free"


@pytest.mark.slow(18)
def test_mixed_precision_smoke(tmp_path):
    module = load_experiment("mixed_precision")
    results = module.main(["--preset", "demo", "--set", "max_train=200", "--set", "max_test=100",
                           "--set", "models=vgg11", "--set", "seeds=0", "--out", str(tmp_path)]
                          + one_epoch("train"))
    assert [(r["model"], r["compute dtype"], r["seeds"]) for r in results["rows"]] == [
        ("vgg11", "float32", 1), ("vgg11", "bfloat16", 1)]
    markdown = (tmp_path / "results.md").read_text()
    assert f"host CPU {results['environment']['host_cpu']}" in markdown and "| vgg11 | bfloat16 | 1 |" in markdown


@pytest.mark.slow(70)
@VGG19_SMOKES
def test_compression_smoke(tmp_path):
    module = load_experiment("compression_scheme")
    # Two rules' students (the balanced rule's widths: tests/test_students.py; every rule's student
    # goes through the same code here, and each one more costs ~10 s of compiling).
    results = module.main(SMOKE + one_epoch("vgg_train", "vgg_prune", "vgg_distill") + [
        "--set", "families=vgg19", "--set", "cost_batch_size=16", "--set", "width_rules=chain,uniform",
        "--set", "student_arms=kd_pruned", "--out", str(tmp_path)])
    r = results["vgg19"]
    assert [(s["width_rule"], s["teacher"]) for s in r["students"]] == [
        (rule, "vgg19 pruned") for rule in ("chain", "uniform")]
    assert all(s["derived_from_sparsity"] == pytest.approx(0.36, abs=1e-3) for s in r["students"])
    dense, masked, *derived = r["costs"]
    assert [c["rule"] for c in derived] == ["chain", "uniform"]
    # A masked teacher computes as much as the dense one; the derived students less.
    assert masked["flops"] == dense["flops"] and masked["nonzero_params"] < dense["params"]
    for student in derived:
        assert student["flops"] < 0.8 * dense["flops"] and student["params"] < 0.8 * dense["params"]
        row = next(s for s in r["students"] if s["width_rule"] == student["rule"] and s["teacher"] == "vgg19 pruned")
        assert student["kd_pruned"] == pytest.approx(row["test_accuracy"])
    chain, uniform = derived[0], derived[1]
    assert abs(uniform["params"] / chain["params"] - 1) < 0.1 and uniform["widths"] != chain["widths"]
    text = (tmp_path / "vgg19" / "results.md").read_text()
    assert "inference images/s" in text and "KD from its pruned teacher (mean ± std)" in text
    index = (tmp_path / "results.md").read_text()
    assert f"summed over the families: {r['train_seconds']['total']:,.0f} s" in index
    assert all(f"vgg19 {rule} st36 / vgg19 pruned 36%: " in index for rule in ("chain", "uniform"))
    assert [w["rule"] for w in r["width_rules"]] == ["chain", "balanced", "uniform"]
    assert all(abs(w["ratio"] - 1) < 0.1 for w in r["width_rules"])
    # Each other rule's student against the chain student of the same arm, seed by seed.
    against_chain = [c for c in r["comparisons"] if c["baseline"].endswith("same arm")]
    assert [c["student"].split()[1] for c in against_chain] == ["uniform"]
    assert all(c["arm"] == "KD from vgg19 pruned 36%" for c in against_chain)


@pytest.mark.slow(60)
def test_a_paper_preset_dry_run_trains_every_stage_two_steps_plans_its_cost_and_lowers_its_steps(tmp_path, capsys):
    # The paper preset at full widths (VGG19 and VGG11 on CIFAR-100's shape and 100 classes),
    # every stage through the real code for two steps: teacher, pruning rounds, the scratch and
    # KD students; its cost plan; each step lowered for cuda and tpu. One pruning round instead
    # of seven (the loop over rounds: the demo tests) and batches of 16 instead of 128 keep it to
    # about a minute here (the plan's FLOPs per image do not depend on the batch); the plan is
    # the real run's.
    module = load_experiment("vgg19_to_vgg11")
    small = [a for key in ("train", "prune.schedule", "student_distill") for a in ("--set", f"{key}.batch_size=16")]
    results = runs.run_cli(module.main, ["--preset", "paper", "--dry-run", "--set", "teachers=vgg19", *small,
                                         "--set", "prune.rounds=1", "--set", "kd_rounds=1",
                                         "--set", "student_train_size=5000", "--out", str(tmp_path)])
    assert results["config"]["dry_run"] is True and results["config"]["train"]["epochs"] == 200
    assert results["data"]["classes"] == 100 and results["data"]["source"] == "tfds:cifar100"
    assert all(r["epochs"] == 1 for r in results["rows"])  # every stage trained: one epoch of two batches
    assert {r["stage"] for r in results["rows"]} == {"teacher", "student_scratch", "student_kd_unpruned",
                                                     "student_kd_round_01"}
    assert [r["widths"] for r in results["rows"] if r["stage"] == "teacher"] == [list(pdjax.models.default_widths("vgg19"))]
    plan = {p["stage"]: p for p in results["plan"]}
    assert plan["teacher"]["epochs"] == 200 and plan["teacher"]["train_images"] == 45_000
    assert plan["pruning (1 round)"]["epochs"] == 130
    # The students plan their subset of the real data, though the dry run's synthetic split is
    # smaller than it (and so trains them on all of it).
    assert plan["student_scratch"]["train_images"] == plan["student_kd_unpruned"]["train_images"] == 5000
    assert plan["student_kd_unpruned"]["train_flops_per_image"] > plan["student_scratch"]["train_flops_per_image"]
    written = json.loads((tmp_path / "cost_plan.json").read_text())
    assert {e["outcome"] for e in written["exports"]} == {"lowered"} and len(written["exports"]) >= 3
    out = capsys.readouterr().out
    assert "## Steps lowered for accelerators" in out and "hours, H200 bfloat16" in out
