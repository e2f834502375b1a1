"""experiments/kd_regime_probe.py on its demo family: a run, then a run that goes on from what the
first one left (its saved teacher and its results.json), as a new session goes on from a commit."""

import json

import pytest

from test_experiments import load_experiment

pytestmark = pytest.mark.slow(40)

ARGV = ["--family", "demo", "--cells", "w64_n300_e1", "--seeds", "0,1", "--kd", "4/0.9"]


def test_a_probe_goes_on_from_a_saved_teacher_and_its_results_json(tmp_path, capsys):
    probe = load_experiment("kd_regime_probe")
    first, second = tmp_path / "first", tmp_path / "second"
    probe.main(ARGV + ["--out", str(first)])
    before = json.loads((first / "results.json").read_text())
    assert [(s["arm"], s["seed"]) for s in before["students"]] == [
        ("scratch", 0), ("kd_T4_a0.9", 0), ("scratch", 1), ("kd_T4_a0.9", 1)]
    (row,) = before["rows"]
    assert row["seeds"] == 2 and row["per_seed"] == [
        round(before["students"][i + 1]["val_accuracy"] - before["students"][i]["val_accuracy"], 4) for i in (0, 2)]
    assert "no cell has 3 seeds yet" in (first / "results.md").read_text()
    capsys.readouterr()

    # Seed 2 is new; seeds 0 and 1 come from the first run, and its teacher is evaluated, not trained.
    probe.main(ARGV[:4] + ["--seeds", "0,1,2", "--kd", "4/0.9", "--out", str(second),
                            "--teacher-from", str(first / "teacher"), "--reuse", str(first / "results.json")])
    printed = capsys.readouterr().out
    after = json.loads((second / "results.json").read_text())
    assert after["teacher_val_accuracy"] == before["teacher_val_accuracy"]
    assert after["teacher_train_seconds"] == 0
    assert [s.get("reused", False) for s in after["students"]] == [True] * 4 + [False] * 2
    assert after["students"][:4] == [{**s, "reused": True} for s in before["students"]]
    assert printed.count('"seed": 2') == 2 and '"seed": 0' not in printed
    assert after["rows"][0]["seeds"] == 3 and not (second / "w64_n300_e1" / "scratch_seed0").exists()

    # A results.json of another teacher is refused before any student trains.
    before["teacher_val_accuracy"] += 0.01
    (tmp_path / "other.json").write_text(json.dumps(before))
    with pytest.raises(SystemExit, match="another teacher"):
        probe.main(ARGV + ["--out", str(tmp_path / "third"), "--teacher-from", str(first / "teacher"),
                           "--reuse", str(tmp_path / "other.json")])
    assert not (tmp_path / "third" / "w64_n300_e1").exists()
