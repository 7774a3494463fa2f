"""seaborn/matplotlib figures of the tables: bars with the tables' own CI bounds as error bars.

The figures draw precomputed means and their percentile-bootstrap CI bounds (``M``, ``M lo``,
``M hi`` columns of :mod:`audiointerp.tables`; :func:`audiointerp.stats.bootstrap_ci`), so the
error bars are exactly the intervals printed in the tables; nothing is resampled here.
Figures are built with :class:`matplotlib.figure.Figure` (no pyplot state) and written as PNG
(120 dpi). seaborn and matplotlib are imported lazily (the tables do not need them).

This module imports :mod:`audiointerp.render` (row orders, CI column names) but never
:mod:`audiointerp.tables`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import METRIC_NAMES, METRICS
from .render import CI_HI, CI_LO, CONDITION_ORDER, METHOD_ORDER, natural_order

__all__ = ["plot_accuracy", "plot_condition_bars", "plot_domains"]


def _figure(nrows, ncols, size):
    """A constrained-layout Figure of ``nrows x ncols`` axes (``size`` in inches) and its axes, flattened."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()


def _bars_with_ci(ax, data: pd.DataFrame, x: str, hue: str, metric: str, x_order, hue_order, palette):
    """Seaborn bar plot of precomputed means (column ``metric``) with the ``metric lo``/``hi`` bounds as error bars."""
    import seaborn as sns

    sns.barplot(data=data, x=x, y=metric, hue=hue, order=x_order, hue_order=hue_order, errorbar=None,
                palette=palette, ax=ax, legend=False)
    for container, h in zip(ax.containers, hue_order):
        sub = data[data[hue] == h].set_index(x)
        for bar in container:
            xi = int(round(bar.get_x() + bar.get_width() / 2))
            if xi >= len(x_order) or x_order[xi] not in sub.index or np.isnan(bar.get_height()):
                continue
            r = sub.loc[x_order[xi]]
            lo, hi = r[metric + CI_LO], r[metric + CI_HI]
            if not (np.isnan(lo) or np.isnan(hi)):
                cx = bar.get_x() + bar.get_width() / 2
                ax.errorbar(cx, r[metric], yerr=[[r[metric] - lo], [hi - r[metric]]], fmt="none",
                            ecolor="black", elinewidth=1, capsize=2)


def plot_condition_bars(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Bar figure of a condition x method table of one model, with the tables' CIs as error bars.

    One panel per metric (y in the metric's unit, :data:`audiointerp.metrics.METRICS`),
    conditions on the x axis, methods as colours.

    Args:
        table: :func:`audiointerp.tables.condition_method_table` of one model (index (condition,
            method) after dropping ``model``; columns ``M``, ``M lo``, ``M hi`` per metric).
        path: the PNG to write (parent folders created).
        title: figure title.

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: the PNG cannot be written.

    """
    import seaborn as sns

    data = table.reset_index()
    conds = natural_order(data["condition"], CONDITION_ORDER)
    methods = natural_order(data["method"], METHOD_ORDER)
    palette = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    with sns.axes_style("whitegrid"):
        fig, axes = _figure(2, 4, (4.0 * 4, 7.0))
        for ax, metric in zip(axes, METRIC_NAMES):
            _bars_with_ci(ax, data, "condition", "method", metric, conds, methods, palette)
            unit = METRICS[metric].unit
            ax.set_title(f"{metric} {METRICS[metric].arrow}")
            ax.set_ylabel(unit)
            ax.set_xlabel("")
        legend = axes[len(METRIC_NAMES)]
        legend.axis("off")
        from matplotlib.patches import Patch

        legend.legend(handles=[Patch(color=palette[m], label=m) for m in methods], title="method", loc="center")
        if title:
            fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_domains(cells: pd.DataFrame, model: str, path: str | Path) -> Path:
    """Scatter of the audio-domain mean against the spectrogram-domain mean of every cell of one model.

    One point per (condition, method, mask), one panel per metric (in its unit), with the
    identity line (points on it: re-synthesis changes nothing).

    Args:
        cells: :func:`audiointerp.tables.cell_table` (index model, condition, domain, method, mask).
        model: the model whose cells are drawn.
        path: the PNG to write (parent folders created).

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: the PNG cannot be written.

    """
    import seaborn as sns

    flat = cells.reset_index()
    flat = flat[flat["model"] == model]
    wide = flat.pivot_table(index=["condition", "method", "mask"], columns="domain", values=METRIC_NAMES)
    methods = natural_order(flat["method"], METHOD_ORDER)
    conds = natural_order(flat["condition"], CONDITION_ORDER)
    palette = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    with sns.axes_style("whitegrid"):
        fig, axes = _figure(2, 4, (4.0 * 4, 7.5))
        for ax, metric in zip(axes, METRIC_NAMES):
            ax.set_title(f"{metric} {METRICS[metric].arrow} ({METRICS[metric].unit})")
            if (metric, "spectrogram") not in wide or (metric, "audio") not in wide:
                ax.text(0.5, 0.5, "one domain only", ha="center", transform=ax.transAxes)
                continue
            d = pd.DataFrame({"spectrogram": wide[(metric, "spectrogram")], "audio": wide[(metric, "audio")]}).reset_index()
            sns.scatterplot(data=d, x="spectrogram", y="audio", hue="method", style="condition", hue_order=methods,
                            style_order=conds, palette=palette, ax=ax, legend=False, s=25)
            lims = [np.nanmin(d[["spectrogram", "audio"]].to_numpy()), np.nanmax(d[["spectrogram", "audio"]].to_numpy())]
            ax.plot(lims, lims, color="grey", lw=1, ls="--")
        legend = axes[len(METRIC_NAMES)]
        legend.axis("off")
        from matplotlib.lines import Line2D

        markers = ["o", "X", "s", "P", "D", "^", "v", "*"]
        handles = [Line2D([], [], marker="o", ls="", color=palette[m], label=m) for m in methods]
        handles += [Line2D([], [], marker=markers[i % len(markers)], ls="", color="grey", label=c)
                    for i, c in enumerate(conds)]
        legend.legend(handles=handles, loc="center", title="method / condition")
        fig.suptitle(f"{model}: audio domain vs spectrogram domain, mean of every (condition, method, mask)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_accuracy(acc: pd.DataFrame, path: str | Path) -> Path:
    """Bars of the accuracy (fraction) per condition, and the mean reconstruction SNR (dB) when known.

    Models as colours; the tables' bootstrap CIs as error bars.

    Args:
        acc: :func:`audiointerp.tables.accuracy_table` (index model, condition; columns
            ``accuracy``/``recon_snr_db`` with their ``lo``/``hi`` bounds).
        path: the PNG to write (parent folders created).

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: the PNG cannot be written.

    """
    import seaborn as sns

    data = acc.reset_index()
    models = natural_order(data["model"], [])
    conds = natural_order(data["condition"], CONDITION_ORDER)
    palette = dict(zip(models, sns.color_palette("colorblind", len(models))))
    panels = ["accuracy"] + (["recon_snr_db"] if data["recon_snr_db"].notna().any() else [])
    with sns.axes_style("whitegrid"):
        fig, axes = _figure(1, len(panels), (5.0 * len(panels) + 1, 4.0))
        for ax, col in zip(axes, panels):
            _bars_with_ci(ax, data, "condition", "model", col, conds, models, palette)
            ax.set_title({"accuracy": "accuracy ↑ (fraction, 95% CI)",
                          "recon_snr_db": "reconstruction SNR ↑ (dB, 95% CI)"}[col])
            ax.set_xlabel("")
            ax.set_ylabel("fraction" if col == "accuracy" else "dB")
        from matplotlib.patches import Patch

        axes[0].legend(handles=[Patch(color=palette[m], label=m) for m in models], title="model", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


