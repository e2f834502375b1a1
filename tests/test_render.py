"""Plots and tables (pdjax.render)."""

import itertools

import pytest

from pdjax import render


def test_colors_follow_the_labels_not_their_order():
    labels = [f"vgg11 KD from teacher {i}" for i in range(7)]
    palette = [f"c{i}" for i in range(10)]
    first = render.stable_colors(labels, palette)
    assert len(set(first.values())) == 7  # distinct while there are colors enough
    for order in itertools.islice(itertools.permutations(labels), 0, 50, 7):
        assert render.stable_colors(list(order), palette) == first
    assert len(set(render.stable_colors([f"l{i}" for i in range(12)], palette).values())) == 10  # then repeat


def _drawn_colors(tmp_path, monkeypatch, series, bands, band_lines):
    from matplotlib.colors import to_hex
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(render, "save_figure", lambda fig, path: figures.append(fig))
    render.plot_panels(tmp_path / "p.png", [render.Panel(series, "acc", {k: [0.01, 0.02] for k in series}, bands,
                                                           band_lines)], xlabel="sparsity", title="t")
    ax = figures[0].axes[0]
    colors = {line.get_label(): to_hex(line.get_color()) for line in ax.get_lines()
              if not line.get_label().startswith("_")}  # the bands' lines
    colors.update({c.get_label(): to_hex(c.lines[0].get_color()) for c in ax.containers})  # the error-bar lines
    legend = {text.get_text() for text in ax.get_legend().get_texts()}
    plt.close(figures[0])
    assert set(series) | set(bands) <= legend
    return colors


def test_each_models_scratch_band_has_the_color_of_its_models_line_in_any_order(tmp_path, monkeypatch):
    series = {"vgg16 KD": ([0.0, 0.36], [0.35, 0.41]), "mobilenetv2 KD": ([0.0, 0.36], [0.34, 0.36])}
    bands = {"mobilenetv2 scratch": (0.31, 0.03), "vgg16 scratch": (0.34, 0.06)}  # not in the lines' order
    links = {"vgg16 scratch": "vgg16 KD", "mobilenetv2 scratch": "mobilenetv2 KD"}
    colors = _drawn_colors(tmp_path, monkeypatch, series, bands, links)
    assert colors["vgg16 scratch"] == colors["vgg16 KD"] != colors["mobilenetv2 scratch"]
    assert colors["mobilenetv2 scratch"] == colors["mobilenetv2 KD"]
    # The same lines listed the other way round keep their colors.
    again = _drawn_colors(tmp_path, monkeypatch, dict(reversed(series.items())), bands, links)
    assert again == colors
    # A band linked to no line has a color of its own.
    alone = _drawn_colors(tmp_path, monkeypatch, series, {"baseline": (0.3, 0.0)}, {})
    assert alone["baseline"] not in (alone["vgg16 KD"], alone["mobilenetv2 KD"])


def test_markdown_table_formats_and_leaves_missing_cells_empty():
    rows = [{"stage": "teacher", "acc": 0.91234, "params": 1234567}, {"stage": "student", "acc": None}]
    table = render.markdown_table(rows, [("stage", "stage", "s"), ("acc", "acc", ".3f"), ("params", "params", ",")])
    assert table.splitlines() == ["| stage | acc | params |", "|---|---:|---:|",
                                  "| teacher | 0.912 | 1,234,567 |", "| student |  |  |"]
    with pytest.raises(ValueError):
        render.markdown_table([{"acc": "x"}], [("acc", "acc", ".3f")])
