"""Summary tables rebuilt from the per-clip logs in ``results/``.

:func:`load_results` reads every ``<results>/<model>/<method>_<condition>/csvs/<mask>.csv``
into one long table; the table builders average the metrics over clips and mark each
metric's direction (↑ higher is better, ↓ lower is better, from :data:`audiointerp.metrics.METRICS`)
and, in Markdown, the best value of each column in bold. :func:`build_tables` writes CSV and
Markdown files to ``supplementary/``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import ResultsError
from .masks import MASK_NAMES
from .metrics import METRIC_NAMES, METRICS

FORMATS = {"FF": "{:.3f}", "AI": "{:.1f}", "AD": "{:.1f}", "AG": "{:.1f}", "FidIn": "{:.3f}",
           "SPS": "{:.3f}", "COMP": "{:.2f}"}
METHOD_ORDER = ["saliency", "gradcam", "shap", "piq", "l2i"]


def load_results(results: str | Path, model: str | None = None) -> pd.DataFrame:
    """All per-clip rows under ``results`` as one DataFrame.

    Columns: model, method, condition, domain, mask, then the CSV columns (sample, filename,
    label, pred, is_correct, FF, AI, AD, AG, FidIn, SPS, COMP).

    Raises:
        ResultsError: no CSV found under ``results`` (names the folder).
    """
    results = Path(results)
    frames = []
    for path in sorted(results.glob("*/*/csvs/*.csv")):
        run_dir = path.parent.parent
        mdl = run_dir.parent.name
        if model is not None and mdl != model:
            continue
        method, _, condition = run_dir.name.partition("_")
        df = pd.read_csv(path)
        if df.empty:
            continue
        df.insert(0, "mask", path.stem)
        df.insert(0, "domain", df.pop("domain") if "domain" in df else "spectrogram")
        df.insert(0, "condition", condition)
        df.insert(0, "method", method)
        df.insert(0, "model", mdl)
        frames.append(df)
    if not frames:
        raise ResultsError(f"no results found under {results} (expected <model>/<method>_<condition>/csvs/*.csv)")
    return pd.concat(frames, ignore_index=True)


def _order(values, preferred) -> list:
    vals = list(dict.fromkeys(values))
    return [v for v in preferred if v in vals] + sorted(v for v in vals if v not in preferred)


def mean_table(df: pd.DataFrame, rows, metrics=METRIC_NAMES) -> pd.DataFrame:
    """Mean of ``metrics`` over clips, grouped by ``rows`` (a column name or list), plus ``n``.

    Rows follow the natural order of methods and masks (then first appearance) at every level.
    """
    rows = [rows] if isinstance(rows, str) else list(rows)
    g = df.groupby(rows, sort=False)
    out = g[list(metrics)].mean()
    out["n"] = g.size()
    rank = []
    for r in rows:
        pref = METHOD_ORDER if r == "method" else MASK_NAMES if r == "mask" else []
        rank.append({v: i for i, v in enumerate(_order(df[r], pref))})
    if len(rows) == 1:
        return out.loc[sorted(out.index, key=rank[0].__getitem__)]
    return out.loc[sorted(out.index, key=lambda t: tuple(k[v] for k, v in zip(rank, t)))]


def with_arrows(table: pd.DataFrame) -> pd.DataFrame:
    """Rename metric columns to ``"FF ↑"`` etc. (also inside MultiIndex columns)."""
    def name(c):
        if isinstance(c, tuple):
            return tuple(name(x) for x in c)
        return f"{c} {METRICS[c].arrow}" if c in METRICS else c

    return table.rename(columns=lambda c: name(c)) if not isinstance(table.columns, pd.MultiIndex) else \
        table.set_axis(pd.MultiIndex.from_tuples([name(c) for c in table.columns]), axis=1)


def best_rows(table: pd.DataFrame) -> dict:
    """For each metric column, the index label of its best value (by the metric's direction)."""
    best = {}
    for c in table.columns:
        metric = c[-1] if isinstance(c, tuple) else c
        if metric in METRICS and table[c].notna().any():
            best[c] = table[c].idxmax() if METRICS[metric].higher_is_better else table[c].idxmin()
    return best


def to_markdown(table: pd.DataFrame, title: str | None = None) -> str:
    """Markdown table with ↑/↓ in the headers and the best value of each metric in bold."""
    best = best_rows(table)
    idx_names = [n or "" for n in (table.index.names if table.index.nlevels > 1 else [table.index.name])]

    def head(c):
        parts = c if isinstance(c, tuple) else (c,)
        return " ".join(f"{p} {METRICS[p].arrow}" if p in METRICS else str(p) for p in parts)

    lines = []
    if title:
        lines += [f"**{title}**", ""]
    cols = list(table.columns)
    lines.append("| " + " | ".join(idx_names + [head(c) for c in cols]) + " |")
    lines.append("|" + "---|" * (len(idx_names) + len(cols)))
    for label, row in table.iterrows():
        labels = list(label) if isinstance(label, tuple) else [label]
        cells = []
        for c in cols:
            metric = c[-1] if isinstance(c, tuple) else c
            v = row[c]
            s = "" if pd.isna(v) else (FORMATS.get(metric, "{}").format(v) if metric in FORMATS else f"{v:g}"
                                       if isinstance(v, float) else str(v))
            cells.append(f"**{s}**" if best.get(c) == label and s else s)
        lines.append("| " + " | ".join([str(x) for x in labels] + cells) + " |")
    return "\n".join(lines)


def per_method_tables(df: pd.DataFrame) -> dict:
    """``{(model, condition, domain, method): masks-as-rows table}``."""
    out = {}
    for key, sub in df.groupby(["model", "condition", "domain", "method"], sort=False):
        out[key] = mean_table(sub, "mask")
    return out


def per_mask_tables(df: pd.DataFrame) -> dict:
    """``{(model, condition, domain, mask): methods-as-rows table}``."""
    out = {}
    for key, sub in df.groupby(["model", "condition", "domain", "mask"], sort=False):
        out[key] = mean_table(sub, "method")
    return out


def correct_incorrect_table(df: pd.DataFrame) -> pd.DataFrame:
    """Methods x masks as rows; columns (correct | incorrect) x metric, means over clips."""
    d = df.assign(prediction=df["is_correct"].map({1: "correct", 0: "incorrect"}))
    t = d.groupby(["method", "mask", "prediction"], sort=False)[METRIC_NAMES].mean().unstack("prediction")
    t = t.swaplevel(0, 1, axis=1)
    order = [p for p in ("correct", "incorrect") if p in t.columns.get_level_values(0)]
    t = t.reindex(columns=pd.MultiIndex.from_product([order, METRIC_NAMES]))
    methods = _order(df["method"], METHOD_ORDER)
    masks = _order(df["mask"], MASK_NAMES)
    return t.reindex(pd.MultiIndex.from_product([methods, masks], names=["method", "mask"])).dropna(how="all")


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, condition, domain, method): metrics averaged over all masks and clips."""
    return mean_table(df, ["model", "condition", "domain", "method"])


def build_tables(results: str | Path = "results", out: str | Path = "supplementary", model: str | None = None) -> dict:
    """Rebuild every table from ``results`` and export CSV + Markdown to ``out``.

    Writes ``summary.{csv,md}``, ``per_method_<model>_<condition>_<domain>_<method>.{csv,md}``,
    ``per_mask_<...>_<mask>.{csv,md}``, ``correct_vs_incorrect_<model>_<condition>_<domain>.{csv,md}``
    and ``tables.md`` (all Markdown tables in one file).

    Returns:
        dict with the DataFrames and ``summary_markdown``.

    Raises:
        ResultsError: nothing under ``results``.
    """
    df = load_results(results, model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md_all = []

    def export(table, stem, title):
        with_arrows(table).to_csv(out / f"{stem}.csv", float_format="%.6g")
        md = to_markdown(table, title)
        (out / f"{stem}.md").write_text(md + "\n")
        md_all.append(md)
        return md

    summary = summary_table(df)
    summary_md = export(summary, "summary", "Summary: means over all masks and clips")
    methods = per_method_tables(df)
    for (mdl, cond, dom, meth), t in methods.items():
        export(t, f"per_method_{mdl}_{cond}_{dom}_{meth}", f"{mdl} · {cond} · {dom} · {meth}: masks")
    masks = per_mask_tables(df)
    for (mdl, cond, dom, mask), t in masks.items():
        export(t, f"per_mask_{mdl}_{cond}_{dom}_{mask}", f"{mdl} · {cond} · {dom} · mask {mask}: methods")
    ci = {}
    for (mdl, cond, dom), sub in df.groupby(["model", "condition", "domain"], sort=False):
        ci[(mdl, cond, dom)] = t = correct_incorrect_table(sub)
        export(t, f"correct_vs_incorrect_{mdl}_{cond}_{dom}", f"{mdl} · {cond} · {dom}: correct vs incorrect predictions")
    (out / "tables.md").write_text("\n\n".join(md_all) + "\n")
    return {"data": df, "summary": summary, "per_method": methods, "per_mask": masks,
            "correct_incorrect": ci, "summary_markdown": summary_md}
