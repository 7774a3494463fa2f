"""Paired differences between methods over the same clips, with clip-resampled bootstrap CIs.

A claim "method A is more faithful than method B" compares two means over the *same* clips. Two
means whose separate CIs overlap can still differ reliably (the clips that are hard for A are hard
for B), and two means over different clip sets are not comparable at all. This module gives the
paired comparison: for each clip, the metric of A minus the metric of B (each averaged over the
masks both methods share), then the mean of those per-clip differences over the clips both
methods scored, with a percentile-bootstrap CI that resamples clips (Efron & Tibshirani 1993, *An
Introduction to the Bootstrap*, ch. 13; the draws of :func:`audiointerp.stats.bootstrap_ci`, so a
pair over n clips gets the same resamples as any mean over n clips with the same seed).

Layer: tables (imports :mod:`audiointerp.stats`, :mod:`audiointerp.render`, the mask and metric
names; nothing above).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from .errors import ConfigError, unknown_name
from .masks import NATIVE
from .metrics import METRIC_NAMES, METRICS
from .render import CI_HI, CI_LO, CONDITION_ORDER, DOMAIN_ORDER, FORMATS, METHOD_ORDER, natural_order
from .stats import _check_ci_args, bootstrap_ci

__all__ = ["PAIR_INDEX", "SUPPORTED", "clip_means", "difference_display", "native_difference_table",
           "paired_difference_table"]

#: index levels of :func:`paired_difference_table`
PAIR_INDEX = ["model", "condition", "domain", "method A", "method B"]
#: marker of a difference whose CI excludes 0 in :func:`difference_display`
SUPPORTED = "*"
_CLIP = ["filename", "clip_digest"]
_CELL = ["model", "condition", "domain"]


def clip_means(df: pd.DataFrame, metrics=METRIC_NAMES) -> pd.DataFrame:
    """Per clip and method, each metric averaged over the masks the methods share (``native`` left out).

    Args:
        df: long table (:func:`audiointerp.tables.load_results`): one row per (clip, mask, domain)
            with columns model, condition, domain, method, mask, filename, clip_digest and the
            metric columns (float, each in its own unit: FF and FidIn in [-1, 1] / [0, 1], AI, AD,
            AG in %, SPS in [0, 1], COMP in nats).
        metrics: the metric columns to average.

    Returns:
        DataFrame with columns model, condition, domain, method, filename, clip_digest, the
        metrics (float, mean over the clip's mask rows; NaN values skipped) and ``masks`` (int:
        the mask rows averaged).

    Raises:
        ConfigError: a metric that is not a column of ``df`` (names it and the columns present).

    """
    metrics = list(metrics)
    missing = [m for m in metrics if m not in df]
    if missing:
        raise ConfigError(f"metric column(s) {', '.join(missing)} not in the results (columns: "
                          f"{', '.join(map(str, df.columns))})")
    d = df[df["mask"] != NATIVE].copy()
    if "clip_digest" not in d:
        d["clip_digest"] = ""
    d["clip_digest"] = d["clip_digest"].fillna("").astype(str)
    keys = [*_CELL, "method", *_CLIP]
    g = d.groupby(keys, sort=False)
    out = g[metrics].mean()
    out["masks"] = g["mask"].nunique()
    return out.reset_index()


def paired_difference_table(df: pd.DataFrame, metrics=METRIC_NAMES, pairs=None, *, n_resamples: int = 1000,
                            seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Mean per-clip difference ``A − B`` of every metric, for pairs of methods, over their common clips.

    For each (model, condition, domain) and each pair (A, B) of methods (every pair in the tables'
    method order, A before B, unless ``pairs`` is given): the clips both methods scored (same file
    name and clip digest), the per-clip difference of the mask-averaged metric
    (:func:`clip_means`), its mean, and a seeded percentile-bootstrap CI that resamples those clips
    (the paired bootstrap). Read the sign with the metric's direction: a positive FF, AI, AG,
    FidIn or SPS difference, and a negative AD or COMP difference, favour A.

    Args:
        df: long table (:func:`audiointerp.tables.load_results`).
        metrics: the metric columns compared.
        pairs: ``[(A, B), ...]`` method names to compare (None: every pair present in a cell).
        n_resamples: bootstrap resamples (0: NaN bounds).
        seed: seed of the bootstrap draws.
        confidence: coverage of every CI, in (0, 1).

    Returns:
        DataFrame indexed by :data:`PAIR_INDEX` (model, condition, domain, method A, method B) with
        columns ``M``, ``M lo``, ``M hi`` (float, in the metric's unit) per metric ``M``, ``clips``
        (int: clips in common) and ``clips A only`` / ``clips B only`` (int: clips one method
        scored and the other did not, left out of the difference). Pairs without a common clip
        are left out.

    Raises:
        ConfigError: bad bootstrap settings; a method of ``pairs`` absent from the results (lists
            the methods present); a pair of a method with itself; a metric not in ``df``.

    """
    _check_ci_args(n_resamples, confidence)
    metrics = list(metrics)
    per = clip_means(df, metrics)
    present = natural_order(per["method"], METHOD_ORDER)
    if pairs is not None:
        pairs = [tuple(p) for p in pairs]
        for p in pairs:
            if len(p) != 2 or p[0] == p[1]:
                raise ConfigError(f"a pair is two different methods, got {p!r}")
            for m in p:
                if m not in present:
                    raise unknown_name("method", m, present)
    labels, blocks, extra = [], [], []
    cells = per.groupby(_CELL, sort=False)
    rank = {lv: {v: i for i, v in enumerate(natural_order(per[lv], pref))}
            for lv, pref in (("condition", CONDITION_ORDER), ("domain", DOMAIN_ORDER))}
    order = sorted(cells.groups, key=lambda k: (str(k[0]), rank["condition"][k[1]], rank["domain"][k[2]]))
    for key in order:
        sub = cells.get_group(key)
        by_method = {m: s.set_index(_CLIP)[metrics] for m, s in sub.groupby("method", sort=False)}
        names = natural_order(by_method, METHOD_ORDER)
        todo = pairs if pairs is not None else list(combinations(names, 2))
        for a, b in todo:
            if a not in by_method or b not in by_method:
                continue
            A, B = by_method[a], by_method[b]
            common = A.index.intersection(B.index, sort=False)
            if not len(common):
                continue
            labels.append((*key, a, b))
            blocks.append(A.loc[common].to_numpy(float) - B.loc[common].to_numpy(float))
            extra.append((len(common), len(A.index.difference(B.index)), len(B.index.difference(A.index))))
    cols = [c for m in metrics for c in (m, m + CI_LO, m + CI_HI)]
    if not labels:
        return pd.DataFrame(columns=[*cols, "clips", "clips A only", "clips B only"],
                            index=pd.MultiIndex.from_tuples([], names=PAIR_INDEX), dtype=float)
    out = np.empty((len(labels), 3 * len(metrics)))
    for i, block in enumerate(blocks):  # each pair's clips resampled on their own (cached draws per clip count)
        out[i, 0::3], out[i, 1::3], out[i, 2::3] = bootstrap_ci(block, n_resamples, seed, confidence)
    table = pd.DataFrame(out, index=pd.MultiIndex.from_tuples(labels, names=PAIR_INDEX), columns=cols)
    table[["clips", "clips A only", "clips B only"]] = np.array(extra, dtype=np.int64)
    return table


def native_difference_table(df: pd.DataFrame, mask: str = "topK_30_pos", metrics=METRIC_NAMES, *,
                            n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """The learned interpreters' own masks against every method's ``mask``, paired over clips.

    The rows of each method's ``mask`` and of each learned method's ``native`` mask (relabelled
    ``"<method> (native)"``) are compared as single-mask methods: for each native mask A and every
    other row B of the same (model, condition, domain), the mean over common clips of A − B with a
    clip-resampled bootstrap CI (:func:`paired_difference_table`). The paired counterpart of
    :func:`audiointerp.tables.native_table`.

    Args:
        df: long table (:func:`audiointerp.tables.load_results`).
        mask: the mask of the other methods (default ``topK_30_pos``, the tables' default).
        metrics, n_resamples, seed, confidence: as :func:`paired_difference_table`.

    Returns:
        a :func:`paired_difference_table` result whose ``method A`` is always a native mask; empty
        when the results hold no native mask.

    Raises:
        ConfigError: bad bootstrap settings; ``mask`` not among the results' masks (lists them).

    """
    present = list(dict.fromkeys(df["mask"]))
    if mask not in present:
        raise unknown_name("mask", mask, present)
    sel = df[df["mask"].isin([mask, NATIVE])].copy()
    native = (sel["mask"] == NATIVE).to_numpy()
    sel.loc[native, "method"] = sel.loc[native, "method"].astype(str) + " (native)"
    sel["mask"] = mask
    order = [m for b in METHOD_ORDER for m in (b, f"{b} (native)")]
    natives = natural_order(sel.loc[native, "method"], order)
    others = natural_order(sel["method"], order)
    pairs = [(a, b) for a in natives for b in others if b != a]
    return paired_difference_table(sel, metrics, pairs, n_resamples=n_resamples, seed=seed, confidence=confidence)




def difference_display(table: pd.DataFrame, metrics=None) -> pd.DataFrame:
    """Text version of :func:`paired_difference_table` for Markdown / LaTeX.

    Each metric column becomes ``"Δ M ↑"`` (or ``↓``: the direction that favours A) with cells
    ``+0.046 [+0.031, +0.061]`` (FF, FidIn, SPS to 3 decimals, COMP to 2, AI, AD, AG in % to 1),
    followed by :data:`SUPPORTED` when the CI excludes 0 (the data support "A differs from B" on
    that metric at the table's confidence); ``clips`` is kept, the one-sided clip counts only when
    some pair has clips one method lacks.

    Args:
        table: a :func:`paired_difference_table` result.
        metrics: the metrics shown (default: every metric with its three columns in ``table``).

    Returns:
        DataFrame of str (same index).

    """
    if metrics is None:
        metrics = [c for c in table.columns if c + CI_LO in table and c + CI_HI in table]
    shown = {}
    for m in metrics:
        fmt = "{:+" + FORMATS.get(m, "{:.3g}")[2:]  # the tables' format of the metric, signed
        arrow = "" if m not in METRICS else (" ↑" if METRICS[m].higher_is_better else " ↓")
        cells = []
        for v, lo, hi in zip(table[m], table[m + CI_LO], table[m + CI_HI]):
            if pd.isna(v):
                cells.append("")
                continue
            text = fmt.format(v)
            if not (pd.isna(lo) or pd.isna(hi)):
                text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
                if lo > 0 or hi < 0:
                    text += " " + SUPPORTED
            cells.append(text)
        shown[f"Δ {m}{arrow}"] = cells
    out = pd.DataFrame(shown, index=table.index)
    out["clips"] = [str(int(n)) for n in table["clips"]]
    for c in ("clips A only", "clips B only"):
        if c in table and table[c].astype(int).any():
            out[c] = [str(int(n)) for n in table[c]]
    return out
