"""The markdown report and the plots of a prune-then-distill run (a `PipelineResult`), and the
files a run writes: results.json, results.md and the plots (`write`), and the index of a
two-family run (`write_index`).

Usage:
    from pdjax.designs.prune_distill import report
    markdown = report.report(result, "VGG19 -> VGG11")
    report.plot("runs/x", result, "VGG19 -> VGG11")
    report.write("runs/x", result, "vgg19_to_vgg11", "demo", run_config, data)   # what an experiment writes
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pdjax import parallel, render, sparsity
from pdjax.data import ImageData
from pdjax.designs.common import results_json
from pdjax.designs.prune_distill.results import PipelineResult, student_label, comparisons, student_name


STAGE_COLUMNS = [("stage", "stage", "s"), ("model", "model", "s"), ("params", "params", ","),
                 ("best_epoch", "best epoch", "d"), ("val_accuracy", "val acc", ".4f"),
                 ("test_accuracy", "test acc", ".4f"), ("train_seconds", "train s", ".1f")]
PRUNING_COLUMNS = [("teacher", "teacher", "s"), ("round", "round", "d"), ("sparsity", "sparsity", ".3f"),
                   ("remaining", "remaining weights", ","), ("val_accuracy", "val acc", ".4f"),
                   ("test_accuracy", "teacher test acc", ".4f"), ("train_seconds", "train s", ".1f")]
COMPARISON_COLUMNS = [("student", "student", "s"), ("arm", "arm", "s"), ("baseline", "compared with", "s"),
                      ("mean", "mean diff", "+.4f"), ("std", "± std", ".4f"), ("record", "wins/losses/ties", "s"),
                      ("t", "paired t", ".2f"), ("p", "p (t-test)", ".3f"), ("sign_p", "p (sign test)", ".3f"),
                      ("verdict", "verdict", "s")]


def student_columns(result: PipelineResult) -> list[render.Column]:
    columns = [("model", "student", "s")]
    if any(r.derived_from_sparsity is not None for r in result.students):
        columns += [("width_rule", "width rule", "s"), ("derived_from_sparsity", "widths from sparsity", ".2f")]
    columns += [("teacher", "teacher", "s"), ("teacher_sparsity", "teacher sparsity", ".3f"),
                ("teacher_test_accuracy", "teacher test acc", ".4f"),
                ("student_params", "student params", ","), ("test_accuracy", "student test acc", ".4f")]
    if any(r.test_accuracy_std is not None for r in result.students):
        columns += [("test_accuracy_std", "± std", ".4f"), ("per_seed", "per seed", "s")]
    return columns


def student_table(result: PipelineResult) -> str:
    rows = [{**r.to_json(), "per_seed": ", ".join(f"{a:.4f}" for a in r.test_accuracies)} for r in result.students]
    return render.markdown_table(rows, student_columns(result))


def report(result: PipelineResult, title: str, notes: str = "") -> str:
    """The markdown report: students (the paper's table), their seed-by-seed comparisons,
    pruning rounds, every stage, and the per-layer density of every round."""
    pruning_rows = [{"teacher": t.name, **r.summary} for t in result.teachers for r in t.rounds.values()]
    n_seeds = len(result.students[0].seeds) if result.students else 0
    text = (f"# {title}\n\n{notes}"
            "Test accuracy is that of the epoch with the best validation accuracy, except in pruning "
            "rounds, which keep their last epoch (round 0 is the unpruned teacher).\n\n"
            f"## Students\n\nMean over {n_seeds} seed(s); ± is the standard deviation over seeds.\n\n"
            f"{student_table(result)}\n"
            "## Seed-by-seed comparisons\n\nDifferences in student test accuracy (arm minus the arm it "
            "is compared with) over the same seeds (same initialisation and data order); paired t-test "
            "and two-sided sign test.\n\n"
            f"{render.markdown_table(comparisons(result), COMPARISON_COLUMNS)}\n"
            f"{transfer_section(result)}"
            f"## Pruning the teachers\n\n{render.markdown_table(pruning_rows, PRUNING_COLUMNS)}\n"
            f"## Every trained model\n\n{render.markdown_table(result.rows, STAGE_COLUMNS)}\n"
            f"{_time_note(result.train_seconds())}\n\n")
    for t in result.teachers:
        text += (f"## Per-layer density of the {t.name} teacher's masks\n\n"
                 f"{sparsity.report_table(*t.masks_and_labels())}\n")
    return text


TRANSFER_COLUMNS = [("student", "student", "s"), ("teacher", "teacher", "s"), ("teacher_sparsity", "sparsity", ".3f"),
                    ("teacher_ece", "teacher ECE", ".4f"), ("teacher_nll", "teacher NLL", ".4f"),
                    ("teacher_entropy", "soft-label entropy at T, nats", ".3f"),
                    ("agreement", "student-teacher agreement", ".4f"), ("kl", "KL(teacher ‖ student), nats", ".4f"),
                    ("test_accuracy", "student test acc", ".4f")]


def transfer_rows(result: PipelineResult) -> list[dict[str, Any]]:
    """Per distilled student arm: its teacher's test ECE, NLL and soft-label entropy (from the
    teacher's pruning-table row) and the students' mean agreement with and KL from it."""
    rounds = {(t.name, k): r.summary for t in result.teachers for k, r in t.rounds.items()}
    out = []
    for row in result.students:
        teacher = rounds.get((row.teacher_model, row.teacher_round), {})
        if not row.agreements or "ece" not in teacher:
            continue
        out.append({"student": student_label(row), "teacher": row.teacher, "teacher_sparsity": row.teacher_sparsity,
                    "teacher_ece": teacher["ece"], "teacher_nll": teacher["nll"], "teacher_entropy": teacher["entropy"],
                    "agreement": sum(row.agreements) / len(row.agreements), "kl": sum(row.kls) / len(row.kls),
                    "test_accuracy": row.test_accuracy})
    return out


def transfer_section(result: PipelineResult) -> str:
    rows = transfer_rows(result)
    if not rows:
        return ""
    return ("## What the teachers transfer\n\nOn the test split (`pdjax.diagnostics`): each teacher's expected "
            "calibration error (15 bins), negative log-likelihood and soft-label entropy at the KD temperature; "
            "its students' top-1 agreement with it and KL(teacher || student) at T = 1, mean over seeds.\n\n"
            f"{render.markdown_table(rows, TRANSFER_COLUMNS)}\n")


def _time_note(seconds: Mapping[str, float]) -> str:
    return (f"Training time, the stages' `train s` summed: teachers {seconds['teachers']:,.0f} s, pruning "
            f"rounds {seconds['pruning']:,.0f} s, students {seconds['students']:,.0f} s; "
            f"{seconds['total']:,.0f} s ({seconds['total'] / 3600:.2f} h) in all. Data loading, "
            "restores and reports are not in it; another process on the same cores would lengthen it.")


def plot(out: str | Path, result: PipelineResult, title: str) -> None:
    """Writes curves.png, pruning_density.png (one per teacher with several:
    pruning_density_<teacher>.png), teacher_vs_sparsity.png and student_vs_teacher_sparsity.png
    (mean over seeds with std error bars; a fixed-width scratch student as a band) in `out`."""
    plot_json(out, result.to_json(), title)


def plot_json(out: str | Path, results: Mapping[str, Any], title: str) -> list[str]:
    """`plot` from a run's results.json (its `PipelineResult.to_json()` part), so a finished run's
    plots can be drawn again (`python -m pdjax.cli.replot`). A results.json written before it
    held the validation curves (2026-12-02) gets every plot but curves.png. Returns the files
    written."""
    out = Path(out)
    written = []
    if "curves" in results:
        # A stage that trained no epoch (a teacher taken from `teacher_checkpoint`) has no line.
        curves = {stage: ys for stage, ys in results["curves"].items() if ys}
        render.plot_curves(out / "curves.png", render.mean_over_seeds(curves), xlabel="epoch",
                            ylabel="validation accuracy", title=title)
        written.append("curves.png")
    teachers = results["teachers"]
    for name in teachers:
        file = "pruning_density.png" if len(teachers) == 1 else f"pruning_density_{name}.png"
        sparsity.plot_layer_density(out / file, results["layer_density"][name],
                                    title=f"{name}: per-layer density by round")
        written.append(file)
    teacher_series: dict[str, tuple[list[float], list[float]]] = {}
    for r in results["pruning"]:
        xs, ys = teacher_series.setdefault(r["teacher"], ([], []))
        xs.append(r["sparsity"])
        ys.append(r["test_accuracy"])
    render.plot_series(out / "teacher_vs_sparsity.png", teacher_series, xlabel="sparsity",
                        ylabel="teacher test accuracy", title=title)
    series: dict[str, tuple[list[float], list[float]]] = {}
    errors: dict[str, list[float]] = {}
    bands: dict[str, tuple[float, float]] = {}
    band_lines: dict[str, str] = {}  # a model's scratch band takes the color of its first line
    for r in results["students"]:
        derived = r["derived_from_sparsity"] is not None
        arm = r.get("arm") or _arm_of(r)
        std = r["test_accuracy_std"] or 0.0
        if arm == "scratch" and not derived:
            bands[f"{r['model']} scratch (mean ± std)"] = (r["test_accuracy"], std)
            continue
        x = r["derived_from_sparsity"] if derived else r["teacher_sparsity"]
        if arm == "scratch":
            kind = "scratch"
        elif derived and arm == "kd_unpruned":
            kind = f"KD from {r['teacher_model']} unpruned"
        else:
            kind = f"KD from {r['teacher_model']}"
        label = f"{r['model']} {r['width_rule']} {kind}" if derived else f"{r['model']} {kind}"
        band_lines.setdefault(f"{r['model']} scratch (mean ± std)", label)
        xs, ys = series.setdefault(label, ([], []))
        xs.append(x)
        ys.append(r["test_accuracy"])
        errors.setdefault(label, []).append(std)
    derived = any(r["derived_from_sparsity"] is not None for r in results["students"])
    # Beside the students, each teacher's own test accuracy per round (pruning rounds keep
    # their last epoch).
    render.plot_panels(out / "student_vs_teacher_sparsity.png",
                        [render.Panel(series, "student test accuracy (mean ± std over seeds)", errors, bands,
                                       band_lines),
                         render.Panel(teacher_series, "teacher test accuracy")],
                        xlabel=("sparsity of the teacher the widths come from" if derived else "teacher sparsity"),
                        title=title)
    return written + ["teacher_vs_sparsity.png", "student_vs_teacher_sparsity.png"]


def _arm_of(row: Mapping[str, Any]) -> str:
    """A student row's arm in a results.json written before rows held it: from its values (no
    teacher: scratch; an unpruned teacher has sparsity 0)."""
    if row["teacher_model"] is None:
        return "scratch"
    return "kd_unpruned" if not row["teacher_sparsity"] else "kd_pruned"


def write(out: str | Path, result: Any, experiment: str, preset: str,
                 run_config: Mapping[str, Any], data: ImageData, notes: str = "",
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Writes results.json (with `extra` merged in), results.md (with `notes` before the tables)
    and the plots of a `PipelineResult`; returns the JSON."""
    out = Path(out)
    results, data_note = results_json(result, run_config, data, extra)
    title = f"{experiment}, preset `{preset}`"
    markdown = report(result, title, data_note + notes)
    if parallel.is_main_process():
        render.write_results(out, results, markdown)
        # From the JSON just built (its to_json part), as `python -m pdjax.cli.replot` draws them:
        # the per-layer statistics and comparisons are not computed a second time.
        plot_json(out, results, plot_title(results))
        print(f"\n{student_table(result)}\n"
              f"results in {out}")
    return results


def write_index(out: str | Path, experiment: str, preset: str, families: Mapping[str, dict[str, Any]]) -> None:
    """A top-level results.md/results.json for an experiment with several families (sub-directories)."""
    lines = [f"# {experiment}, preset `{preset}`\n"]
    for family, results in families.items():
        lines.append(f"- [{family}]({family}/results.md): " + ", ".join(
            f"{student_name(r['model'], r['width_rule'], r['derived_from_sparsity'])} / {r['teacher']}"
            + (f" {r['teacher_sparsity']:.0%}" if r.get("teacher_sparsity") else "")
            + f": {r['test_accuracy']:.4f}" for r in results["students"]))
    total = sum(r["train_seconds"]["total"] for r in families.values())
    lines.append(f"\nTraining time, the stages' `train s` summed over the families: {total:,.0f} s ({total / 3600:.2f} h); "
                 "each family's results.md splits it.")
    if parallel.is_main_process():
        render.write_results(out, {"experiment": experiment, "preset": preset, "families": dict(families)},
                              "\n".join(lines) + "\n")


def plot_title(results: Mapping[str, Any]) -> str:
    """The plots' title: "<experiment>[: <family>] (<preset>)" (results.json of runs before
    2026-12-03 name the family "arm")."""
    experiment = results.get("experiment", "run")
    family = results.get("family", results.get("arm"))
    if family is not None:
        experiment = f"{experiment}: {family}"
    return f"{experiment} ({results.get('preset', '?')})"
