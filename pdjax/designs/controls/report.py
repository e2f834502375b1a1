"""The controls design's report: the answer in words, the contrasts with their two-level
intervals, per teacher, the teachers, the students' best epochs, every stage (`report`); its
plot (`plot`); and the files a run writes (`write`: results.json, results.md, controls.png,
curves.png).

Usage:
    from pdjax.designs.controls import report
    print(report.answer(result))
    report.write("runs/x", result, "pruning_controls", "demo", run_config, data)
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from pdjax import parallel, render
from pdjax.data import ImageData
from pdjax.designs.common import pooled_machine_note, results_json
from pdjax.designs.controls.results import ControlsResult, mixed_model_available

CONTRAST_COLUMNS: list[render.Column] = [
    ("contrast", "contrast (student test acc)", "s"), ("mean_pts", "mean, points", "+.2f"),
    ("ci", "95% interval, points", "s"), ("p", "p", ".3f"), ("p_holm", "p, Holm", ".3f"),
    ("p_sign_flip", "p, exact sign-flip over teachers", ".4f"),
    ("mde_pts", "detectable at 80% power, points", ".2f"), ("record", "pairs won/lost/tied", "s"),
    ("sd_teacher_pts", "sd between teachers", ".2f"), ("sd_seed_pts", "sd between seeds", ".2f")]


def _points(row: dict[str, Any]) -> dict[str, Any]:
    pts = lambda v: None if v is None else 100 * v  # noqa: E731
    ci = "" if row["low"] is None else f"{100 * row['low']:+.2f} to {100 * row['high']:+.2f}"
    return {**row, "mean_pts": pts(row["mean"]), "ci": ci, "mde_pts": pts(row["mde"]),
            "sd_teacher_pts": pts(row["sd_teacher"]), "sd_seed_pts": pts(row["sd_seed"])}


def answer(result: ControlsResult) -> str:
    """One sentence per round: is it the pruning, or the training (magnitude - dense)?"""
    lines = []
    plan = result.preregistered()
    if plan is not None:
        lines.append(preregistered_sentence(plan))
    for (a, b, _), row in zip(result.contrast_arms(), result.contrasts()):
        if (a, b) != ("magnitude", "dense") or row.get("role") == "primary":
            continue
        if row["low"] is None or row["p_holm"] is None:
            why = "no interval" if row["low"] is None else "every teacher's difference the same, no test"
            lines.append(f"Round {row['round']}: magnitude - dense {100 * row['mean']:+.2f} points, {why} "
                         f"({row['teachers']} teacher(s) x {row['seeds']} seed(s)).")
            continue
        significant = row["p_holm"] < 0.05
        verdict = ("the pruned teacher's students differ from the equally trained dense teacher's"
                   if significant else "no measurable difference between pruning and the same extra training")
        lines.append(f"Round {row['round']}: magnitude - dense = {100 * row['mean']:+.2f} points "
                     f"(95% interval {100 * row['low']:+.2f} to {100 * row['high']:+.2f}, Holm p = "
                     f"{row['p_holm']:.3f}; {row['teachers']} teachers x {row['seeds']} seeds; this design detects "
                     f"{100 * row['mde']:.1f} points with 80% power): {verdict}.")
    return " ".join(lines)


def conclusion(plan: Mapping[str, Any]) -> str:
    """The pre-registered conclusion in words, by `pdjax.stats.verdict`'s rule alone."""
    m = 100 * plan["margin"]
    if plan["verdict"] == "pruning helps":
        return f"pruning helps (by at least {100 * plan['low']:.2f} points, the interval's lower end)"
    if plan["verdict"] == "pruning hurts":
        return f"pruning hurts (by at least {-100 * plan['high']:.2f} points, the interval's upper end)"
    if plan["verdict"] == "equivalent":
        return f"equivalent within ±{m:.2f} points"
    return f"inconclusive (neither a difference nor equivalence within ±{m:.2f} points shown)"


def preregistered_sentence(plan: Mapping[str, Any]) -> str:
    """The primary contrast with its tests and the pre-registered conclusion, in one sentence."""
    def pts(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:+.2f}"

    def pval(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    return (f"Pre-registered primary contrast, {plan['contrast']}: {pts(plan['mean'])} points (95% interval "
            f"{pts(plan['low'])} to {pts(plan['high'])}, t-test p = {pval(plan['p'])}, exact sign-flip p = "
            f"{pval(plan['p_sign_flip'])}; TOST against ±{100 * plan['margin']:.2f} points p = {pval(plan['p_tost'])}, "
            f"90% interval {pts(plan['tost_low'])} to {pts(plan['tost_high'])}; {plan['teachers']} teachers x "
            f"{plan['seeds']} seeds): **{conclusion(plan)}**.")


MIXED_COLUMNS: list[render.Column] = [
    ("round", "round", "d"), ("term", "term", "s"), ("estimate_pts", "estimate, points (per point for teacher acc)",
                                                       "+.2f"),
    ("ci", "95% interval", "s"), ("p", "p", ".3f"), ("students", "students", "d"), ("teachers", "teachers", "d")]


def _mixed_rows(model: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in model:
        # Coefficients of accuracy on accuracy: the teacher slope is unit-free, the rest in points.
        scale = 1.0 if r["term"] == "teacher test acc" else 100.0
        out.append({**r, "estimate_pts": scale * r["estimate"],
                    "ci": f"{scale * r['low']:+.2f} to {scale * r['high']:+.2f}"})
    return out


def report(result: ControlsResult, title: str, notes: str = "") -> str:
    """The markdown report: the answer, the contrasts, per teacher, the teachers, the students'
    best epochs, every stage."""
    config = result.config
    contrasts = [_points(r) for r in result.contrasts()]
    per_teacher = []
    for r in contrasts:
        for t, (m, diffs) in zip(config.teacher_seeds, zip(r["teacher_means"], r["differences"])):
            per_teacher.append({"contrast": r["contrast"], "teacher": t, "mean_pts": 100 * m,
                                "per_seed": ", ".join(f"{100 * d:+.2f}" for d in diffs)})
    teacher_rows = [dataclasses.asdict(t) for t in result.teachers]
    arms = []
    for label in dict.fromkeys(s.label for s in result.students):
        accs = [s.test_accuracy for s in result.students if s.label == label]
        arms.append({"arm": label, "students": len(accs), "mean": statistics.fmean(accs),
                     "std": statistics.stdev(accs) if len(accs) > 1 else None})
    seconds = result.train_seconds()
    method = contrasts[0]["method"] if contrasts else ""
    return (
        f"# {title}\n\n{notes}"
        f"**Is it the pruning, or the training?** {answer(result)}\n\n"
        f"Design: {len(config.teacher_seeds)} teachers ({config.teacher.name} x{config.teacher.width_multiplier:g}, "
        f"seeds {', '.join(map(str, config.teacher_seeds))}), each pruned {config.prune.rounds} rounds of "
        f"{config.prune.fraction:.0%} ({config.prune.scope}, {config.prune.rewind} rewinding, "
        f"{config.prune.schedule.epochs} epochs a round) by magnitude and in the controls; students "
        f"{config.student.name} x{config.student.width_multiplier:g}, {len(config.seeds)} seeds per teacher, "
        f"{config.student_distill.epochs} epochs (KD T = {config.kd.temperature:g}, alpha = {config.kd.alpha:g}).\n\n"
        f"{_plan_section(result)}"
        "## Contrasts\n\nStudent test accuracy of one arm minus another's, paired by teacher and seed, in points. "
        f"Interval and p: {method}. The exact sign-flip p-value permutes the signs of the teachers' mean "
        f"differences (it cannot go below 2 / 2^teachers). {_holm_note(result)} "
        "'Detectable' is the smallest true difference this design finds with 80% power at the 5% level, given "
        "the spread measured here.\n\n"
        f"{render.markdown_table(contrasts, CONTRAST_COLUMNS)}\n"
        "## Per teacher\n\n"
        f"{render.markdown_table(per_teacher, [('contrast', 'contrast', 's'), ('teacher', 'teacher seed', 'd'), ('mean_pts', 'mean, points', '+.2f'), ('per_seed', 'per student seed, points', 's')])}\n"
        f"{_transfer_section(result)}"
        f"{_mixed_section(result)}"
        "## Student arms\n\n"
        f"{render.markdown_table(arms, [('arm', 'arm', 's'), ('students', 'students', 'd'), ('mean', 'test acc', '.4f'), ('std', '± std (teachers and seeds)', '.4f')])}\n"
        "## Teachers\n\nTest accuracy of each teacher the students learnt from; `epochs` counts every epoch it "
        "was trained, the teacher's own and each round's.\n\n"
        f"{render.markdown_table(teacher_rows, [('teacher_seed', 'teacher seed', 'd'), ('arm', 'arm', 's'), ('round', 'round', 'd'), ('sparsity', 'sparsity', '.3f'), ('epochs', 'epochs trained', 'd'), ('val_accuracy', 'val acc', '.4f'), ('test_accuracy', 'test acc', '.4f')])}\n"
        "## Did the students finish learning?\n\nThe epoch of best validation accuracy (the one reported), per "
        "arm.\n\n"
        f"{render.markdown_table([{**b, 'best_epochs': ', '.join(map(str, b['best_epochs']))} for b in result.best_epochs()], [('arm', 'arm', 's'), ('students', 'students', 'd'), ('epochs', 'epochs', 'd'), ('mean_best_epoch', 'mean best epoch', '.1f'), ('in_last_two', 'best in the last two epochs', 'd'), ('best_epochs', 'best epochs', 's')])}\n"
        f"## Every trained model\n\n{render.markdown_table(result.rows, _STAGE_COLUMNS)}\n"
        f"Training time, the stages' `train s` summed: teachers {seconds['teachers']:,.0f} s, pruning and control "
        f"rounds {seconds['rounds']:,.0f} s, students {seconds['students']:,.0f} s; {seconds['total']:,.0f} s "
        f"({seconds['total'] / 3600:.2f} h) in all.\n")


def _holm_note(result: ControlsResult) -> str:
    if result.config.primary is None:
        return "Holm's adjustment runs over every contrast of the table."
    return ("Holm's adjustment runs over the secondary contrasts only; the primary one is decided by the "
            "pre-registered rules above, unadjusted.")


def _plan_section(result: ControlsResult) -> str:
    plan = result.preregistered()
    if plan is None:
        return ""
    return ("## Pre-registered analysis\n\n"
            f"{preregistered_sentence(plan)}\n\nThe rules, fixed before the runs (`pdjax.stats.verdict`): "
            "\"pruning helps\" (or hurts) when the t-test over the teachers' mean differences and the exact "
            f"sign-flip test both reject 0 at the {plan['level']:.0%} level; otherwise \"equivalent\" when TOST "
            f"rejects both |difference| >= {100 * plan['margin']:.2f} points at that level (the 90% interval inside "
            "the margin); otherwise \"inconclusive\".\n\n")


TRANSFER_COLUMNS: list[render.Column] = [
    ("arm", "arm", "s"), ("teachers", "teachers", "d"), ("teacher_accuracy", "teacher test acc", ".4f"),
    ("teacher_ece", "teacher ECE", ".4f"), ("teacher_nll", "teacher NLL", ".4f"),
    ("teacher_entropy", "soft-label entropy at T, nats", ".3f"), ("students", "students", "d"),
    ("agreement", "student-teacher agreement", ".4f"), ("kl", "KL(teacher ‖ student), nats", ".4f"),
    ("student_accuracy", "student test acc", ".4f")]


def _transfer_section(result: ControlsResult) -> str:
    rows = result.transfer()
    if not rows:
        return ""
    return ("## What the teachers transfer\n\nDoes pruning make the teacher a better regularizer? Per arm, on the "
            "test split (`pdjax.diagnostics`): the teachers' expected calibration error (15 bins), negative "
            f"log-likelihood and the entropy of their soft labels at the KD temperature (T = "
            f"{result.config.kd.temperature:g}); their students' top-1 agreement with and KL from their teacher "
            "(T = 1, Stanton et al. 2021); means over teachers and over students.\n\n"
            f"{render.markdown_table(rows, TRANSFER_COLUMNS)}\n")


def _mixed_section(result: ControlsResult) -> str:
    text = ("## Pruning beyond teacher accuracy\n\nPer round, over the students of its sequences: a linear mixed "
            "model, student test acc ~ sequence (dense the reference) + teacher test acc + a random intercept "
            "per teacher (statsmodels' MixedLM, REML). `magnitude - dense` is what magnitude pruning adds over "
            "the same retraining without pruning when both teachers are equally accurate; "
            "`student_vs_teacher.png` plots every student against its teacher.\n\n")
    if not mixed_model_available():
        return text + "Not fitted: statsmodels is not installed (`pip install -e '.[analysis]'`).\n\n"
    model = result.mixed_model()
    if not model:
        return text + "Not fitted: it needs two teachers or more.\n\n"
    return text + render.markdown_table(_mixed_rows(model), MIXED_COLUMNS) + "\n"


_STAGE_COLUMNS: list[render.Column] = [
    ("stage", "stage", "s"), ("model", "model", "s"), ("best_epoch", "best epoch", "d"),
    ("val_accuracy", "val acc", ".4f"), ("test_accuracy", "test acc", ".4f"), ("train_seconds", "train s", ".1f")]


def plot(path: str | Path, result: ControlsResult, title: str) -> None:
    """One figure: left, each arm's students per teacher (dots: seeds; bar: the teacher's mean);
    right, each contrast per teacher (dots) and pooled (mean and 95% interval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.lines
    import matplotlib.pyplot as plt

    config = result.config
    labels = list(dict.fromkeys(s.label for s in result.students))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    n_t = len(config.teacher_seeds)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6), dpi=120, gridspec_kw={"width_ratios": [1.3, 1]})
    for i, label in enumerate(labels):
        if label == "scratch":  # no teacher: one group, shared by every teacher
            groups = [(None, i, "gray", [s for s in result.students if s.label == label])]
        else:
            groups = [(t, i + (j - (n_t - 1) / 2) * 0.7 / n_t, colors[j % len(colors)],
                       [s for s in result.students if s.label == label and s.teacher_seed == t])
                      for j, t in enumerate(config.teacher_seeds)]
        for _, x, color, members in groups:
            if members:
                ys = [100 * s.test_accuracy for s in members]
                left.scatter([x] * len(ys), ys, s=10, color=color, alpha=0.6)
                left.hlines(statistics.fmean(ys), x - 0.06, x + 0.06, color=color, linewidth=2)
    handles = [matplotlib.lines.Line2D([], [], color=colors[j % len(colors)], marker="o", linestyle="",
                                       label=f"teacher seed {t}") for j, t in enumerate(config.teacher_seeds)]
    left.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    left.set_ylabel("student test accuracy, % (dots: seeds; bars: means)")
    left.grid(alpha=0.3, axis="y")
    left.legend(handles=handles, fontsize=8)
    contrasts = result.contrasts()
    for i, row in enumerate(contrasts):
        for j, m in enumerate(row["teacher_means"]):
            right.scatter(100 * m, i + 0.15, s=12, color=colors[j % len(colors)], alpha=0.7)
        if row["low"] is not None:
            right.errorbar(100 * row["mean"], i - 0.1, xerr=[[100 * (row["mean"] - row["low"])],
                                                           [100 * (row["high"] - row["mean"])]],
                           fmt="o", color="black", capsize=4)
        else:
            right.scatter(100 * row["mean"], i - 0.1, color="black")
    right.axvline(0, color="gray", linewidth=1)
    right.set_yticks(range(len(contrasts)), [r["contrast"] for r in contrasts], fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("difference, points\n(black: pooled mean and 95% interval; dots: per teacher)")
    right.grid(alpha=0.3, axis="x")
    fig.suptitle(title)
    fig.tight_layout()
    render.save_figure(fig, path)


def write(out: str | Path, result: ControlsResult, experiment: str, preset: str,
                          run_config: Mapping[str, Any], data: ImageData,
                          parts: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Writes results.json, results.md, controls.png, student_vs_teacher.png and curves.png of a
    `ControlsResult`;
    with `parts` (the results.json of pooled runs, `load_parts`), each part's teachers and the
    machine that trained them, instead of the pooling process's machine."""
    out = Path(out)
    extra = machine = None
    if parts:
        extra = {"parts": [{"teacher_seeds": p["config"]["teacher_seeds"], "environment": p["environment"]}
                           for p in parts]}
        machine = pooled_machine_note(parts)
    results, data_note = results_json(result, run_config, data, extra, machine)
    title = f"{experiment}, preset `{preset}`"
    markdown = report(result, title, data_note)
    if parallel.is_main_process():
        render.write_results(out, results, markdown)
        plot(out / "controls.png", result, f"{experiment} ({preset})")
        plot_student_vs_teacher(out / "student_vs_teacher.png", result, f"{experiment} ({preset})")
        render.plot_curves(out / "curves.png", render.mean_over_seeds(
            {s.stage: result.curves[s.stage] for s in result.students if s.stage in result.curves}), xlabel="epoch",
            ylabel="student validation accuracy", title=f"{experiment} ({preset}): students, mean over seeds")
        print(f"\n{answer(result)}\nresults in {out}")
    return results


def plot_student_vs_teacher(path: str | Path, result: ControlsResult, title: str) -> None:
    """Every distilled student's test accuracy against its teacher's, one point per student,
    coloured by arm (sequence and round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    labels = [s.label for s in result.students if s.arm != "scratch"]
    colors = render.stable_colors(list(dict.fromkeys(labels)), plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for label in dict.fromkeys(labels):
        members = [s for s in result.students if s.label == label]
        xs = [100 * result.teacher_accuracy(s) for s in members]
        ax.scatter(xs, [100 * s.test_accuracy for s in members], s=16, color=colors[label], label=label, alpha=0.8)
    scratch = [100 * s.test_accuracy for s in result.students if s.arm == "scratch"]
    if scratch:
        ax.axhspan(min(scratch), max(scratch), color="gray", alpha=0.15, label="scratch students (range)")
    ax.set_xlabel("teacher test accuracy, %")
    ax.set_ylabel("student test accuracy, %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    render.save_figure(fig, path)
