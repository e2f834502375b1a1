"""Result tables (markdown and JSON) and plots."""

from __future__ import annotations

import dataclasses
import statistics
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

from pdjax.files import write_atomic, write_json_atomic, write_text_atomic

Column = tuple[str, str, str]  # (key, header, format spec)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A markdown table of `rows`; a missing value prints as an empty cell."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" if f.endswith("s") else "---:" for _, _, f in columns) + "|"]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("" if value is None else format(value, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(out: str | Path, results: dict[str, Any], markdown: str, stem: str = "results") -> None:
    """Writes `<stem>.json` and `<stem>.md` in `out`, each atomically."""
    out = Path(out)
    write_json_atomic(out / f"{stem}.json", results)
    write_text_atomic(out / f"{stem}.md", markdown)


def plot_curves(path: str | Path, curves: dict[str, Sequence[float]], *, xlabel: str, ylabel: str,
                title: str) -> None:
    """One line per named curve (x = 1, 2, ...), saved as PNG."""
    longest = max((len(ys) for ys in curves.values()), default=0)
    plot_xy(path, list(range(1, longest + 1)), curves, xlabel=xlabel, ylabel=ylabel, title=title)


def plot_xy(path: str | Path, xs: Sequence[float], curves: dict[str, Sequence[float]], *,
            xlabel: str, ylabel: str, title: str) -> None:
    """One line per named curve over shared x values (a shorter curve uses the first xs), as PNG."""
    plot_series(path, {label: (xs[:len(ys)], ys) for label, ys in curves.items()},
                xlabel=xlabel, ylabel=ylabel, title=title)


Series = dict[str, tuple[Sequence[float], Sequence[float]]]  # label -> (xs, ys)


@dataclasses.dataclass(frozen=True)
class Panel:
    """One plot of a figure: named (xs, ys) lines, optional error bars and horizontal bands.

    Attributes:
      series: label -> (xs, ys).
      ylabel: the y axis's label.
      errors: label -> one error-bar half-length per point (e.g. the std over seeds).
      bands: label -> (center, half-width): a horizontal band across the plot (e.g. a
        baseline's mean ± std).
      band_lines: band label -> the series label whose color the band takes (a model's
        scratch band in the color of that model's line); a band not in it has its own color.
    """

    series: Series
    ylabel: str
    errors: dict[str, Sequence[float]] = dataclasses.field(default_factory=dict)
    bands: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    band_lines: dict[str, str] = dataclasses.field(default_factory=dict)


def stable_colors(labels: Sequence[str], palette: Sequence[Any]) -> dict[str, Any]:
    """A color of `palette` per label that depends on the labels, not on their order: a plot
    drawn again from the same run, or from a rerun that lists its lines in another order, gives
    each line the same color. Each label hashes (crc32) to a slot; a slot already taken passes
    the label to the next free one, labels taken in sorted order. Distinct colors while there
    are no more labels than colors (after that, colors repeat)."""
    out: dict[str, Any] = {}
    taken: set[int] = set()
    for label in sorted(set(labels)):
        slot = zlib.crc32(label.encode()) % len(palette)
        if len(taken) < len(palette):
            while slot in taken:
                slot = (slot + 1) % len(palette)
        taken.add(slot)
        out[label] = palette[slot]
    return out


def plot_series(path: str | Path, series: Series, *, xlabel: str, ylabel: str, title: str) -> None:
    """One line per named (xs, ys) pair, saved as PNG."""
    plot_panels(path, [Panel(series, ylabel)], xlabel=xlabel, title=title)


def plot_panels(path: str | Path, panels: Sequence[Panel], *, xlabel: str, title: str) -> None:
    """Panels side by side over the same kind of x axis, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A panel of more than 4 lines and bands gets its legend beside the plot, and the room for it.
    crowded = [len(p.series) + len(p.bands) > 4 for p in panels]
    widths = [9.6 if c else 6.4 for c in crowded]
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths), 4.2), dpi=120, squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, panel, beside in zip(axes[0], panels, crowded):
        own = list(panel.series) + [b for b in panel.bands if panel.band_lines.get(b) not in panel.series]
        # More than 10 colored lines: 20 colors, so that no two lines share one.
        palette = list(plt.get_cmap("tab20").colors if len(own) > 10 else
                       plt.rcParams["axes.prop_cycle"].by_key()["color"])
        colors = stable_colors(own, palette)
        for label, (center, half) in panel.bands.items():
            color = colors[panel.band_lines[label] if label not in colors else label]
            ax.axhline(center, linestyle="--", linewidth=1, label=label, color=color)
            if half:
                ax.axhspan(center - half, center + half, color=color, alpha=0.15)
        for label, (xs, ys) in panel.series.items():
            yerr = panel.errors.get(label)
            if yerr is not None and any(yerr):
                ax.errorbar(xs, ys, yerr=yerr, label=label, marker=".", capsize=3, color=colors[label])
            else:
                ax.plot(xs, ys, label=label, marker="." if len(ys) < 40 else None, color=colors[label])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if beside:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> None:
    """Saves a matplotlib figure atomically and closes it."""
    import matplotlib.pyplot as plt

    write_atomic(path, fig.savefig)
    plt.close(fig)


def mean_over_seeds(curves: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """One curve per stage name without its `_seed<s>` suffix: the mean over that stage's seeds,
    epoch by epoch (over the epochs every seed has). A stage alone in its group keeps its curve
    and name."""
    groups: dict[str, list[tuple[str, Sequence[float]]]] = {}
    for name, ys in curves.items():
        stem, _, seed = name.rpartition("_seed")
        groups.setdefault(stem if stem and seed.isdigit() else name, []).append((name, ys))
    out = {}
    for stem, members in groups.items():
        if len(members) == 1:
            out[members[0][0]] = list(members[0][1])
        else:
            n = min(len(ys) for _, ys in members)
            out[f"{stem} (mean of {len(members)} seeds)"] = [statistics.fmean(ys[i] for _, ys in members)
                                                            for i in range(n)]
    return out
