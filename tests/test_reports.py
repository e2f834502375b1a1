"""Plots and tables (pdjax.reports)."""


def test_each_models_scratch_band_has_the_color_of_its_models_line(tmp_path, monkeypatch):
    from matplotlib.colors import to_hex

    from pdjax import reports

    figures = []
    monkeypatch.setattr(reports, "save_figure", lambda fig, path: figures.append(fig))
    series = {"vgg16 KD": ([0.0, 0.36], [0.35, 0.41]), "mobilenetv2 KD": ([0.0, 0.36], [0.34, 0.36])}
    bands = {"vgg16 scratch": (0.34, 0.06), "mobilenetv2 scratch": (0.31, 0.03)}
    reports.plot_panels(tmp_path / "p.png", [reports.Panel(series, "acc", {k: [0.01, 0.02] for k in series}, bands)],
                        xlabel="sparsity", title="t")
    ax = figures[0].axes[0]
    color = {line.get_label(): to_hex(line.get_color()) for line in ax.get_lines() if not line.get_label().startswith("_")}
    legend = {text.get_text() for text in ax.get_legend().get_texts()}
    assert set(series) | set(bands) <= legend
    band_colors = [color[k] for k in bands]
    line_colors = [to_hex(c.lines[0].get_color()) for c in ax.containers]  # the error-bar lines
    assert band_colors == line_colors and band_colors[0] != band_colors[1]
    import matplotlib.pyplot as plt

    plt.close(figures[0])
