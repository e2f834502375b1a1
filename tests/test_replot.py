"""A finished run's plots drawn again from its results.json (pdjax.cli.replot)."""

import json

import jax.numpy as jnp

from pdjax.cli import replot
from pdjax.designs.prune_distill import report as pipeline_report
from pdjax.designs.prune_distill.results import PipelineResult, StudentRow, TeacherResult, TeacherRound


def _result():
    dense = {"Conv_0": {"kernel": jnp.ones((1, 1, 2, 3), bool)}, "Dense_0": {"kernel": jnp.ones((3, 2), bool)}}
    half = {"Conv_0": {"kernel": jnp.array([[[[1, 0, 1], [0, 0, 1]]]], bool)},
            "Dense_0": {"kernel": jnp.array([[1, 0], [0, 1], [0, 0]], bool)}}
    rounds = {0: TeacherRound(0, 0.0, 0.70, dense, {"round": 0, "sparsity": 0.0, "test_accuracy": 0.70}),
              1: TeacherRound(1, 0.5, 0.72, half, {"round": 1, "sparsity": 0.5, "test_accuracy": 0.72})}

    def row(arm, teacher_round, accuracies):
        return StudentRow(student="student", model="vgg11", widths=(4, 8), width_rule=None, derived_round=None,
                          derived_from_sparsity=None, arm=arm, teacher_model=None if arm == "scratch" else "vgg19",
                          teacher_round=teacher_round, teacher_sparsity=None if arm == "scratch" else 0.5 * teacher_round,
                          teacher_test_accuracy=None, student_params=10, test_accuracies=accuracies, seeds=(0, 1))

    students = [row("scratch", None, (0.60, 0.62)), row("kd_unpruned", 0, (0.61, 0.64)),
                row("kd_pruned", 1, (0.65, 0.63))]
    curves = {"teacher": [0.5, 0.7], "student_scratch_seed0": [0.4, 0.6], "student_scratch_seed1": [0.5, 0.62]}
    return PipelineResult([TeacherResult("vgg19", "teacher", rounds)], [], students, curves)


def test_plots_drawn_from_results_json_are_the_plots_the_run_drew(tmp_path):
    result = _result()
    (tmp_path / "run").mkdir()
    pipeline_report.plot(tmp_path / "run", result, "demo (x)")
    for name in ("now", "old"):
        results = json.loads(json.dumps(result.to_json()))
        if name == "old":  # a results.json from before rows held their arm and the run its curves
            del results["curves"]
            for r in results["students"]:
                del r["arm"]
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({**results, "experiment": "demo", "preset": "x"}))
        assert replot.main([str(tmp_path / name)]) == 0
    drawn = sorted(p.name for p in (tmp_path / "run").glob("*.png"))
    assert drawn == ["curves.png", "pruning_density.png", "student_vs_teacher_sparsity.png", "teacher_vs_sparsity.png"]
    for png in drawn:
        assert (tmp_path / "now" / png).read_bytes() == (tmp_path / "run" / png).read_bytes(), png
        if png != "curves.png":
            assert (tmp_path / "old" / png).read_bytes() == (tmp_path / "run" / png).read_bytes(), png
    assert not (tmp_path / "old" / "curves.png").exists()


def test_a_directory_that_is_not_a_finished_run_stops_before_anything_is_drawn(tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    (good / "results.json").write_text(json.dumps({**_result().to_json(), "experiment": "e", "preset": "p"}))
    (tmp_path / "controls").mkdir()
    (tmp_path / "controls" / "results.json").write_text(json.dumps({"teachers": [], "contrasts": []}))
    for bad, message in [(tmp_path / "none", "no results.json"),
                         (tmp_path / "controls", "not a prune-then-distill run's (no pruning, students")]:
        assert replot.main([str(good), str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert list(good.glob("*.png")) == []
