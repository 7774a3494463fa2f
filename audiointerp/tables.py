"""Tables and figures rebuilt from the per-clip logs in ``results/`` alone.

:func:`load_results` reads every ``<results>/<model>/<method>_<condition>/csvs/<mask>.csv``
(two rows per clip: ``domain`` = ``spectrogram`` and ``audio``) into one long table;
:func:`accuracy_table` reads the ``run.json`` files. The table builders average the metrics
over clips and give every mean a seeded percentile-bootstrap 95% confidence interval
(:func:`bootstrap_ci`). :func:`build_tables` writes CSV, Markdown and LaTeX copies of every table
and a handful of seaborn figures to ``supplementary/``.

Table conventions (all builders):

* a metric column ``M`` (``FF``, ``AI`` ...) holds the mean over clips and is followed by
  ``M lo`` and ``M hi``, the bounds of its bootstrap CI; ``n`` is the number of rows averaged
  (clips, or clips x masks in the summary). Units: FF a probability difference, AI/AD/AG in %,
  FidIn a fraction, SPS a Gini index, COMP in nats, ``accuracy`` a fraction,
  ``recon_snr_db`` in dB (:data:`audiointerp.metrics.METRICS`).
* rendered tables (:func:`to_markdown`, :func:`to_latex`) show ``mean [lo, hi]`` in one cell,
  mark each metric's direction in its header (↑ higher is better, ↓ lower is better;
  ``$\\uparrow$``/``$\\downarrow$`` in LaTeX) and put the best mean of each column in bold
  (``**...**`` / ``\\textbf{...}``), within each group of ``best_within`` rows when given.
  The CSV copies keep every number: ``M ↑``, ``M lo``, ``M hi``.
* rows follow the natural order of models, conditions (clean first), domains (spectrogram,
  audio), methods (:data:`METHOD_ORDER`) and masks (:data:`audiointerp.masks.MASK_NAMES`).

Layout written by :func:`build_tables` (each table as ``.csv``, ``.md`` and ``.tex``)::

    supplementary/
        tables.md                         index: key tables inline, links to all others
        summary.*                         (model, condition, domain, method): means over masks
        accuracy.*                        (model, condition): accuracy, recon SNR, noise
        conditions_<mask>_<domain>.*      (model, condition, method) for the chosen mask
        domains_<model>_<condition>.*     (method, mask) x (spectrogram | audio)
        per_mask/<mask>_<domain>.*        (model, condition, method) for every mask
        per_method/<model>_<condition>_<domain>_<method>.*   masks as rows
        correct_vs_incorrect/<model>_<condition>_<domain>.*  (method, mask) x (correct | incorrect)
        figures/conditions_<mask>_<model>_<domain>.png       bars with 95% CI error bars
        figures/domains_<model>.png       spectrogram vs audio means of every cell
        figures/accuracy.png              accuracy (and recon SNR) per condition

Confidence intervals: percentile bootstrap (Efron & Tibshirani 1993, *An Introduction to the
Bootstrap*, ch. 13), the same resampling as :func:`scipy.stats.bootstrap` with
``method="percentile"``; see :func:`bootstrap_ci`.
"""

from __future__ import annotations

import json
import re
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, ResultsError, unknown_name
from .masks import MASK_NAMES, NATIVE
from .metrics import METRIC_NAMES, METRICS

FORMATS = {"FF": "{:.3f}", "AI": "{:.1f}", "AD": "{:.1f}", "AG": "{:.1f}", "FidIn": "{:.3f}",
           "SPS": "{:.3f}", "COMP": "{:.2f}", "accuracy": "{:.3f}", "recon_snr_db": "{:.1f}",
           "noise_snr_db": "{:.1f}"}
METHOD_ORDER = ["saliency", "gradcam", "shap", "piq", "l2i"]
CONDITION_ORDER = ["clean", "white", "white_gen", "pink", "room", "horse"]
DOMAIN_ORDER = ["spectrogram", "audio"]
DEFAULT_MASK = "topK_30_pos"
#: directions of the non-metric columns that get arrows and a bold best value
EXTRA_DIRECTIONS = {"accuracy": True, "recon_snr_db": True}
CI_LO, CI_HI = " lo", " hi"
_ORDERS = {"method": METHOD_ORDER, "mask": MASK_NAMES, "condition": CONDITION_ORDER, "domain": DOMAIN_ORDER}
_CELL = ["model", "condition", "domain", "method", "mask"]
_LEGACY = ("per_method_*", "per_mask_*", "correct_vs_incorrect_*")
_SUBDIRS = ("per_method", "per_mask", "correct_vs_incorrect", "figures")


# --------------------------------------------------------------------------- loading

def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _run_identity(run_dir: Path, info: dict) -> tuple[str, str]:
    """(method, condition) of a run folder: from run.json (top level, then ``key``), else the
    folder name split at its first ``_`` (condition labels may contain underscores)."""
    method, _, condition = run_dir.name.partition("_")
    key = info.get("key") or {}
    method = info.get("method") or key.get("method") or method
    condition = info.get("condition") or key.get("condition") or condition
    return str(method), str(condition)


def _check_model(results: Path, model: str | None) -> None:
    if model is None:
        return
    present = sorted(p.name for p in results.glob("*") if p.is_dir() and any(p.glob("*/csvs/*.csv")))
    if present and model not in present:
        raise unknown_name("model", model, present)


def load_results(results: str | Path, model: str | None = None) -> pd.DataFrame:
    """All per-clip rows under ``results`` as one DataFrame, one row per (clip, mask, domain).

    Columns: model, method, condition, domain, mask, then the CSV columns sample, filename,
    label, pred, is_correct, recon_snr_db (dB; NaN in CSVs written before it existed), FF, AI,
    AD, AG (%), FidIn, SPS, COMP. ``model`` is the folder name; ``method`` and ``condition``
    come from the run's ``run.json`` when it names them, else from the folder name
    ``<method>_<condition>`` split at the first ``_``. CSVs without a ``domain`` column (older
    runs) are ``spectrogram``.

    Args:
        results: the results folder.
        model: read only this model's folder (None: every model).

    Raises:
        ResultsError: no CSV found under ``results`` (names the folder).
        ConfigError: ``model`` is not a model folder of ``results`` (lists the present ones).
    """
    results = Path(results)
    _check_model(results, model)
    frames = []
    infos: dict[Path, dict] = {}
    for path in sorted(results.glob("*/*/csvs/*.csv")):
        run_dir = path.parent.parent
        mdl = run_dir.parent.name
        if model is not None and mdl != model:
            continue
        if run_dir not in infos:
            infos[run_dir] = _read_json(run_dir / "run.json")
        method, condition = _run_identity(run_dir, infos[run_dir])
        df = pd.read_csv(path)
        if df.empty:
            continue
        if "recon_snr_db" not in df:
            df["recon_snr_db"] = np.nan
        df.insert(0, "mask", path.stem)
        df.insert(0, "domain", df.pop("domain") if "domain" in df else "spectrogram")
        df.insert(0, "condition", condition)
        df.insert(0, "method", method)
        df.insert(0, "model", mdl)
        frames.append(df)
    if not frames:
        raise ResultsError(f"no results found under {results} (expected <model>/<method>_<condition>/csvs/*.csv)")
    return pd.concat(frames, ignore_index=True)


def _noise_fields(noise) -> dict:
    if not isinstance(noise, dict):
        return {"noise": "none" if noise is None else str(noise), "noise_snr_db": np.nan}
    name = Path(str(noise["file"])).name if noise.get("file") else str(noise.get("condition", noise.get("label", "")))
    snr = noise.get("snr_db_used", noise.get("snr_db"))
    return {"noise": name, "noise_snr_db": float(snr) if isinstance(snr, (int, float)) else np.nan}


def run_table(results: str | Path, model: str | None = None) -> pd.DataFrame:
    """One row per run folder that has a ``run.json``.

    Columns: model, method, condition, accuracy (fraction of fold clips correct under the
    condition, ``run.json["accuracy"][condition]``), n_clips (``n_clips_fold``), noise (noise file
    name, ``none`` for clean), noise_snr_db (mixing SNR in dB from ``run.json["noise"]``), status,
    path.

    Raises:
        ResultsError: no ``run.json`` under ``results`` (names the folder).
        ConfigError: unknown ``model``.
    """
    results = Path(results)
    _check_model(results, model)
    rows = []
    for path in sorted(results.glob("*/*/run.json")):
        run_dir = path.parent
        mdl = run_dir.parent.name
        if model is not None and mdl != model:
            continue
        info = _read_json(path)
        method, condition = _run_identity(run_dir, info)
        acc = info.get("accuracy")
        if isinstance(acc, dict):
            acc = acc.get(condition, next(iter(acc.values())) if len(acc) == 1 else None)
        rows.append({"model": mdl, "method": method, "condition": condition,
                     "accuracy": np.nan if acc is None else float(acc),
                     "n_clips": info.get("n_clips_fold", np.nan), **_noise_fields(info.get("noise")),
                     "status": info.get("status", ""), "path": str(run_dir)})
    if not rows:
        raise ResultsError(f"no run.json found under {results} (expected <model>/<method>_<condition>/run.json)")
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- bootstrap

_CACHE_ELEMENTS = 1 << 22  # draw matrices up to this size (32 MiB) are cached and drawn in one batch
_CHUNK_ELEMENTS = 1 << 23  # bound on the [n_resamples, columns] blocks of bootstrap means


@lru_cache(maxsize=8)
def _resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """``[n_resamples, n]`` float matrix: how often each of n units is drawn in each resample.

    The draws are ``default_rng(seed).integers(0, n, (n_resamples, n))``, the draws of
    :func:`scipy.stats.bootstrap` with ``rng=seed`` (one batch).
    """
    return _counts(np.random.default_rng(seed).integers(0, n, (n_resamples, n)), n)


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    b = idx.shape[0]
    counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n).astype(float)
    counts.flags.writeable = False
    return counts


def _draws(n: int, n_resamples: int, seed: int):
    """Count matrices of the resamples: one cached batch, or (for n x n_resamples above
    ``_CACHE_ELEMENTS``) successive row batches of one seeded generator, as SciPy's ``batch``."""
    if n * n_resamples <= _CACHE_ELEMENTS:
        yield _resample_counts(n, n_resamples, seed)
        return
    rng = np.random.default_rng(seed)
    step = max(1, _CACHE_ELEMENTS // n)
    for k in range(0, n_resamples, step):
        yield _counts(rng.integers(0, n, (min(step, n_resamples - k), n)), n)


def _bootstrap_groups(c: np.ndarray, w: np.ndarray, bounds: np.ndarray, n_resamples: int, seed: int,
                      confidence: float):
    """Percentile bootstrap of ``sum(c) / sum(w)`` per column for groups of units.

    ``c``, ``w``: ``[units, k]`` (sums and counts per unit); group g holds units
    ``bounds[g]:bounds[g + 1]``. Groups of equal size share one draw matrix, so all their
    columns go through one matrix product. Returns ``(point, lo, hi)``, each ``[groups, k]``.
    """
    n_groups, k = len(bounds) - 1, c.shape[1]
    sizes = np.diff(bounds)
    with np.errstate(invalid="ignore", divide="ignore"):
        csum = np.add.reduceat(c, bounds[:-1], axis=0) if len(c) else np.zeros((n_groups, k))
        wsum = np.add.reduceat(w, bounds[:-1], axis=0) if len(w) else np.zeros((n_groups, k))
        point = np.where(sizes[:, None] > 0, csum / wsum, np.nan)
    lo, hi = np.full((n_groups, k), np.nan), np.full((n_groups, k), np.nan)
    if not n_resamples:
        return point, lo, hi
    alpha = (1.0 - confidence) / 2.0
    for n in np.unique(sizes[sizes > 0]):
        gs = np.flatnonzero(sizes == n)
        per_chunk = max(1, _CHUNK_ELEMENTS // (int(n_resamples) * k))
        for j in range(0, len(gs), per_chunk):
            g = gs[j:j + per_chunk]
            rows = bounds[g][:, None] + np.arange(n)  # [groups, n]
            cs = c[rows].transpose(1, 0, 2).reshape(n, -1)  # [n, groups * k]
            ws = w[rows].transpose(1, 0, 2).reshape(n, -1)
            with np.errstate(invalid="ignore", divide="ignore"):
                stat = np.concatenate([(r @ cs) / (r @ ws) for r in _draws(int(n), int(n_resamples), int(seed))])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: NaN bounds
                q = (np.nanquantile if np.isnan(stat).any() else np.quantile)(stat, [alpha, 1 - alpha], axis=0)
            lo[g], hi[g] = q[0].reshape(len(g), k), q[1].reshape(len(g), k)
    return point, lo, hi


def _check_ci_args(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) < 0:
        raise ConfigError(f"n_resamples must be >= 0, got {n_resamples}")
    if not 0.0 < float(confidence) < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")


def bootstrap_ci(values, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95, clusters=None):
    """Mean and seeded percentile-bootstrap confidence interval of ``values``.

    Percentile bootstrap (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13):
    draw ``n_resamples`` resamples of the n values with replacement, take the mean of each,
    and report the ``(1 - confidence)/2`` and ``(1 + confidence)/2`` quantiles (linear
    interpolation) of those means. The draws are ``numpy.random.default_rng(seed).integers(0, n,
    (n_resamples, n))``, exactly those of ``scipy.stats.bootstrap(..., method="percentile",
    rng=seed)``, so the bounds equal SciPy's up to rounding (above n x n_resamples = 2**22 the
    draws come in row batches of the same generator, like SciPy's ``batch``); they are computed as
    a ``[n_resamples, n]`` count matrix times the values, vectorised over columns and groups.

    The draws depend only on (seed, n, n_resamples): the same seed gives identical CIs, and a
    group's CI inside a table equals ``bootstrap_ci`` of that group's values alone, whatever
    else the table holds. A constant column has a zero-width CI; NaNs are ignored.

    Args:
        values: ``[n]`` or ``[n, k]`` (k columns, each with its own CI).
        n_resamples: number of resamples (0: no CI, bounds NaN).
        seed: seed of the draws.
        confidence: coverage of the interval, in (0, 1).
        clusters: optional ``[n]`` labels; whole clusters (e.g. the clips, whose rows for
            several masks are not independent) are resampled instead of rows, and the statistic
            is the mean of all rows drawn. With one row per cluster this equals the row bootstrap.

    Returns:
        ``(mean, lo, hi)``: floats for 1-D ``values``, ``[k]`` arrays for 2-D.

    Raises:
        ConfigError: ``n_resamples < 0`` or ``confidence`` outside (0, 1).
    """
    _check_ci_args(n_resamples, confidence)
    v = np.asarray(values, dtype=float)
    one_d = v.ndim == 1
    if v.size == 0:
        nan = np.full(1 if one_d else v.shape[-1], np.nan)
        return (np.nan, np.nan, np.nan) if one_d else (nan, nan.copy(), nan.copy())
    v = v.reshape(len(v), -1)
    ok = ~np.isnan(v)
    shift = np.array([col[m][0] if m.any() else 0.0 for col, m in zip(v.T, ok.T)])
    c = np.where(ok, v - shift, 0.0)  # centred: a constant column sums to exactly 0
    w = ok.astype(float)
    if clusters is not None:
        codes, uniq = pd.factorize(np.asarray(clusters))
        c = np.stack([np.bincount(codes, weights=col, minlength=len(uniq)) for col in c.T], 1)
        w = np.stack([np.bincount(codes, weights=col, minlength=len(uniq)) for col in w.T], 1)
    point, lo, hi = (x[0] + shift for x in _bootstrap_groups(c, w, np.array([0, len(c)]), n_resamples, seed,
                                                              confidence))
    return (float(point[0]), float(lo[0]), float(hi[0])) if one_d else (point, lo, hi)


def _ci_columns(metrics) -> list:
    cols = []
    for m in metrics:
        cols += [m, m + CI_LO, m + CI_HI]
    return cols


def _order(values, preferred) -> list:
    vals = list(dict.fromkeys(values))
    return [v for v in preferred if v in vals] + sorted(v for v in vals if v not in preferred)


def _sort_rows(table: pd.DataFrame, rows: list) -> pd.DataFrame:
    """Rows in the natural order of every level (methods, masks, conditions, domains; else sorted)."""
    if table.empty:
        return table
    rank = []
    for i, r in enumerate(rows):
        vals = table.index.get_level_values(i) if len(rows) > 1 else table.index
        rank.append({v: j for j, v in enumerate(_order(vals, _ORDERS.get(r, [])))})
    if len(rows) == 1:
        return table.loc[sorted(table.index, key=rank[0].__getitem__)]
    return table.loc[sorted(table.index, key=lambda t: tuple(k[v] for k, v in zip(rank, t)))]


def mean_table(df: pd.DataFrame, rows, metrics=METRIC_NAMES, *, n_resamples: int = 1000, seed: int = 0,
               confidence: float = 0.95, cluster: str | None = "filename") -> pd.DataFrame:
    """Means of ``metrics`` over clips, grouped by ``rows``, with bootstrap CIs and ``n``.

    Args:
        df: long table (:func:`load_results`).
        rows: a column name or list of them (the index of the result).
        metrics: columns to average.
        n_resamples, seed, confidence: the bootstrap (:func:`bootstrap_ci`; 0 resamples: NaN bounds).
        cluster: column whose values are resampled as units (default the clip, ``filename``: a
            group spanning several masks or domains resamples whole clips); None or a missing
            column resamples rows.

    Returns:
        DataFrame indexed by ``rows`` (natural order at every level) with columns
        ``M, M lo, M hi`` for each metric M, then ``n`` (rows averaged).

    Raises:
        ConfigError: bad ``n_resamples`` or ``confidence``.
    """
    _check_ci_args(n_resamples, confidence)
    rows = [rows] if isinstance(rows, str) else list(rows)
    metrics = list(metrics)
    cols = _ci_columns(metrics) + ["n"]
    if df.empty:
        idx = pd.MultiIndex.from_tuples([], names=rows) if len(rows) > 1 else pd.Index([], name=rows[0])
        return pd.DataFrame(columns=cols, index=idx, dtype=float)
    g = df.groupby(rows, sort=False)
    sizes = g.size()
    gid = g.ngroup().to_numpy()
    v = df[metrics].to_numpy(dtype=float)
    ok = ~np.isnan(v)
    shift = pd.DataFrame(v).groupby(gid).first().reindex(range(len(sizes))).fillna(0.0).to_numpy()
    c = np.where(ok, v - shift[gid], 0.0)
    w = ok.astype(float)
    if cluster is not None and cluster in df:
        ccodes = pd.factorize(df[cluster])[0].astype(np.int64)
        codes, uniq = pd.factorize(gid.astype(np.int64) * (ccodes.max() + 1) + ccodes)
        unit_gid = uniq // (ccodes.max() + 1)
        c = np.stack([np.bincount(codes, weights=col, minlength=len(uniq)) for col in c.T], 1)
        w = np.stack([np.bincount(codes, weights=col, minlength=len(uniq)) for col in w.T], 1)
    else:
        unit_gid = gid
    order = np.argsort(unit_gid, kind="stable")  # units of each group in first-appearance order
    bounds = np.concatenate([[0], np.cumsum(np.bincount(unit_gid, minlength=len(sizes)))])
    point, lo, hi = _bootstrap_groups(c[order], w[order], bounds, n_resamples, seed, confidence)
    out = np.empty((len(sizes), 3 * len(metrics)))
    out[:, 0::3], out[:, 1::3], out[:, 2::3] = point + shift, lo + shift, hi + shift
    table = pd.DataFrame(out, index=sizes.index, columns=cols[:-1])
    table["n"] = sizes.to_numpy()
    return _sort_rows(table, rows)


# --------------------------------------------------------------------------- rendering

def _direction(name) -> bool | None:
    if name in METRICS:
        return METRICS[name].higher_is_better
    return EXTRA_DIRECTIONS.get(name)


def _arrow(name) -> str:
    d = _direction(name)
    return "" if d is None else ("↑" if d else "↓")


def _head(name: str) -> str:
    return f"{name} {_arrow(name)}" if _arrow(name) else str(name)


def with_arrows(table: pd.DataFrame) -> pd.DataFrame:
    """Rename metric columns to ``"FF ↑"`` etc. (also inside MultiIndex columns); CI columns
    ``FF lo``/``FF hi`` keep their names."""
    def name(c):
        if isinstance(c, tuple):
            return tuple(name(x) for x in c)
        return _head(c)

    return table.rename(columns=lambda c: name(c)) if not isinstance(table.columns, pd.MultiIndex) else \
        table.set_axis(pd.MultiIndex.from_tuples([name(c) for c in table.columns]), axis=1)


def _metric_of(c):
    return c[-1] if isinstance(c, tuple) else c


def _best_flags(table: pd.DataFrame, within=None) -> np.ndarray:
    """``[rows, columns]`` bool: True at the best value of each metric column (the first of
    ties), within each group of rows sharing the ``within`` index level(s) when given."""
    flags = np.zeros(table.shape, dtype=bool)
    if table.empty:
        return flags
    if within is None:
        codes = np.zeros(len(table), dtype=int)
    else:
        levels = [within] if isinstance(within, str) else list(within)
        codes = pd.factorize(pd.MultiIndex.from_arrays([table.index.get_level_values(l) for l in levels]))[0]
    groups = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    for j, c in enumerate(table.columns):
        d = _direction(_metric_of(c))
        if d is None:
            continue
        col = pd.to_numeric(table.iloc[:, j], errors="coerce").to_numpy(dtype=float)
        col = np.where(np.isnan(col), -np.inf, col if d else -col)
        for rows in groups:
            best = rows[np.argmax(col[rows])]
            flags[best, j] = col[best] > -np.inf
    return flags


def best_rows(table: pd.DataFrame, within=None) -> dict:
    """For each metric column, the index label of its best value (by the metric's direction).

    With ``within`` (index level name(s)), a list of labels: the best of each group of rows.
    """
    flags = _best_flags(table, within)
    out = {}
    for j, c in enumerate(table.columns):
        labels = list(table.index[flags[:, j]])
        if labels:
            out[c] = labels if within is not None else labels[0]
    return out


def _fmt(name, v) -> str:
    name = name[:-len(CI_LO)] if isinstance(name, str) and name.endswith((CI_LO, CI_HI)) else name
    if isinstance(v, str):
        return v
    if v is None or pd.isna(v):
        return ""
    if name in FORMATS:
        return FORMATS[name].format(v)
    if name == "n" or isinstance(v, (int, np.integer)):
        return f"{v:.0f}"
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def _layout(table: pd.DataFrame, ci: str | None, best_within, bold, ci_text, esc=str):
    """Shared by the renderers: displayed columns and cell strings (CI merged into the mean)."""
    cols = list(table.columns)
    present = set(cols)

    def sib(c, suffix):
        return c[:-1] + (c[-1] + suffix,) if isinstance(c, tuple) else c + suffix

    shown, merged = [], set()
    for c in cols:
        if ci and (sib(c, CI_LO) in present and sib(c, CI_HI) in present):
            merged |= {sib(c, CI_LO), sib(c, CI_HI)}
    shown = [c for c in cols if c not in merged]
    flags = _best_flags(table[shown], best_within)

    def texts(c):
        m = _metric_of(c)
        return [esc(_fmt(m, v)) for v in table[c].tolist()]

    columns = []
    for j, c in enumerate(shown):
        cells = texts(c)
        cells = [bold(x) if x and f else x for x, f in zip(cells, flags[:, j])]
        if ci and sib(c, CI_LO) in merged:
            cells = [x + ci_text(lo, hi) if x and lo and hi else x
                     for x, lo, hi in zip(cells, texts(sib(c, CI_LO)), texts(sib(c, CI_HI)))]
        columns.append(cells)
    body = [([esc(x) for x in (label if isinstance(label, tuple) else (label,))], [col[i] for col in columns])
            for i, label in enumerate(table.index.tolist())]
    idx_names = [esc(n or "") for n in table.index.names]
    return idx_names, shown, body


def to_markdown(table: pd.DataFrame, title: str | None = None, *, ci: str | None = "bracket",
                best_within=None) -> str:
    """Markdown table: ↑/↓ in the headers, the best mean of each metric column in bold.

    Args:
        table: a table of this module (metric columns ``M`` with optional ``M lo``/``M hi``).
        title: bold line above the table.
        ci: ``"bracket"`` shows ``mean [lo, hi]`` in one cell; None shows the columns as they are.
        best_within: index level(s) within which the best value is marked (default: whole column).
    """
    idx_names, shown, body = _layout(table, ci, best_within, lambda s: f"**{s}**", lambda lo, hi: f" [{lo}, {hi}]")

    def head(c):
        return " ".join(_head(p) for p in (c if isinstance(c, tuple) else (c,)))

    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(idx_names + [head(c) for c in shown]) + " |")
    lines.append("|" + "---|" * (len(idx_names) + len(shown)))
    for labels, cells in body:
        lines.append("| " + " | ".join(labels + cells) + " |")
    return "\n".join(lines)


_TEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
              "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
              "↑": r"$\uparrow$", "↓": r"$\downarrow$", "·": "--", "×": r"$\times$", "≥": r"$\geq$"}


def _tex(s) -> str:
    return "".join(_TEX_CHARS.get(ch, ch) for ch in str(s))


def to_latex(table: pd.DataFrame, title: str | None = None, *, label: str | None = None,
             ci: str | None = "bracket", best_within=None) -> str:
    """LaTeX ``table`` (pandas ``to_latex``: booktabs ``tabular``, in a ``\\resizebox`` to the text width).

    Headers carry ``$\\uparrow$``/``$\\downarrow$``, best means are ``\\textbf``, cells are
    ``mean [lo, hi]``, special characters are escaped (plain ASCII + math mode, compiles with
    pdflatex). Needs ``\\usepackage{booktabs,graphicx}``. Arguments as :func:`to_markdown`;
    ``label`` gives ``\\label{...}``.
    """
    idx_names, shown, body = _layout(table, ci, best_within, lambda s: rf"\textbf{{{s}}}",
                                     lambda lo, hi: f" [{lo}, {hi}]", esc=_tex)
    heads = [c if isinstance(c, tuple) else (c,) for c in shown]
    heads = [tuple(_tex(p) for p in h[:-1]) + (_tex(_head(h[-1])),) for h in heads]
    columns = pd.MultiIndex.from_tuples(heads) if len(heads[0]) > 1 else pd.Index([h[0] for h in heads])
    rows = pd.MultiIndex.from_tuples([tuple(lb) for lb, _ in body], names=idx_names) if len(idx_names) > 1 \
        else pd.Index([lb[0] for lb, _ in body], name=idx_names[0])
    cells = pd.DataFrame([c for _, c in body], index=rows, columns=columns)
    tex = cells.to_latex(escape=False, caption=_tex(title) if title else None, label=label, position="htbp",
                         column_format="l" * len(idx_names) + "r" * len(shown), multicolumn=True,
                         multicolumn_format="c", multirow=False)  # pandas: booktabs rules
    tex = tex.replace("\\begin{tabular}", "\\centering\n\\resizebox{\\textwidth}{!}{%\n\\begin{tabular}", 1)
    tex = tex.replace("\\end{tabular}", "\\end{tabular}}", 1)
    return "% generated by audiointerp.tables; needs \\usepackage{booktabs,graphicx}\n" + tex.strip()


# --------------------------------------------------------------------------- tables

def _ci_kwargs(n_resamples, seed, confidence) -> dict:
    return {"n_resamples": n_resamples, "seed": seed, "confidence": confidence}


def _pick(df: pd.DataFrame, col: str, value, default=None):
    """Validate ``value`` of column ``col`` against the values present (None: the only one,
    else ``default`` when present)."""
    present = list(dict.fromkeys(df[col]))
    if value is None:
        if len(present) == 1:
            return present[0]
        if default is not None and default in present:
            return default
        raise ConfigError(f"{col} must be given: results hold several ({', '.join(map(str, present))})")
    if value not in present:
        raise unknown_name(col, value, present)
    return value


def cell_table(df: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Every (model, condition, domain, method, mask) cell: means over its clips with CIs.

    The finest table; the per-method, per-mask, condition x method and domain tables are
    slices of it (with identical CIs: :func:`bootstrap_ci` draws depend on n only). Columns as
    :func:`mean_table`.
    """
    return mean_table(df, _CELL, **_ci_kwargs(n_resamples, seed, confidence))


def _slice(cells: pd.DataFrame, keys: list, rest: list) -> dict:
    """Split a cell table into ``{key tuple: table indexed by rest}``."""
    out = {}
    flat = cells.reset_index()
    for key, sub in flat.groupby(keys, sort=False):
        t = sub.set_index(rest).drop(columns=[k for k in _CELL if k not in rest])
        out[key if isinstance(key, tuple) else (key,)] = _sort_rows(t, rest)
    return dict(sorted(out.items(), key=lambda kv: _key_rank(kv[0], keys)))


def _key_rank(key, names):
    return tuple((_ORDERS.get(n, []).index(v) if v in _ORDERS.get(n, []) else len(_ORDERS.get(n, [])), str(v))
                 for n, v in zip(names, key))


def per_method_tables(df: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                      cells: pd.DataFrame | None = None) -> dict:
    """``{(model, condition, domain, method): table}``, masks as rows, columns as :func:`mean_table`.

    ``cells`` (a :func:`cell_table`) skips recomputing the means.
    """
    cells = cell_table(df, **_ci_kwargs(n_resamples, seed, confidence)) if cells is None else cells
    return _slice(cells, ["model", "condition", "domain", "method"], ["mask"])


def per_mask_tables(df: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                    cells: pd.DataFrame | None = None) -> dict:
    """``{(model, condition, domain, mask): table}``, methods as rows, columns as :func:`mean_table`."""
    cells = cell_table(df, **_ci_kwargs(n_resamples, seed, confidence)) if cells is None else cells
    return _slice(cells, ["model", "condition", "domain", "mask"], ["method"])


def condition_method_table(df: pd.DataFrame, mask: str = DEFAULT_MASK, model: str | None = None,
                           domain: str = "spectrogram", *, n_resamples: int = 1000, seed: int = 0,
                           confidence: float = 0.95, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Condition x method table of one mask in one domain.

    Rows (model, condition, method), conditions clean first, methods in :data:`METHOD_ORDER`;
    columns ``M, M lo, M hi`` per metric M (means over clips, bootstrap 95% CI) and ``n`` (clips).
    Render with ``best_within=["model", "condition"]`` to mark the best method per condition.

    Args:
        df: long table (:func:`load_results`), or None with ``cells``.
        mask: a mask of :data:`audiointerp.masks.MASK_NAMES` present in the results.
        model: one model (None: all models).
        domain: ``spectrogram`` or ``audio``.

    Raises:
        ConfigError: mask, model or domain not in the results (names the value, lists the valid ones).
    """
    src = cells.reset_index() if cells is not None else df
    mask = _pick(src, "mask", mask)
    domain = _pick(src, "domain", domain)
    if model is not None:
        model = _pick(src, "model", model)
    rows = ["model", "condition", "method"]
    if cells is not None:
        t = src[(src["mask"] == mask) & (src["domain"] == domain) & ((src["model"] == model) if model else True)]
        return _sort_rows(t.drop(columns=["mask", "domain"]).set_index(rows), rows)
    sub = df[(df["mask"] == mask) & (df["domain"] == domain) & ((df["model"] == model) if model else True)]
    return mean_table(sub, rows, **_ci_kwargs(n_resamples, seed, confidence))


def domain_table(df: pd.DataFrame, model: str | None = None, condition: str | None = None, *,
                 n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                 cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Spectrogram vs audio domain side by side for one (model, condition).

    Rows (method, mask); columns (domain, ``M``/``M lo``/``M hi``/``n``) with domain
    ``spectrogram`` (masked features scored directly) then ``audio`` (re-synthesised and
    re-analysed). Means over clips with bootstrap 95% CIs.

    Args:
        df: long table (:func:`load_results`), or None with ``cells``.
        model, condition: which cell of the grid (None: the only one present; condition
            defaults to ``clean`` when present).

    Raises:
        ConfigError: model or condition not in the results, or None while several are present.
    """
    src = cells.reset_index() if cells is not None else df
    model = _pick(src, "model", model)
    condition = _pick(src[src["model"] == model], "condition", condition, default="clean")
    sel = src[(src["model"] == model) & (src["condition"] == condition)]
    t = (_sort_rows(sel.set_index(["method", "mask", "domain"]).drop(columns=["model", "condition"]),
                    ["method", "mask", "domain"]) if cells is not None
         else mean_table(sel, ["method", "mask", "domain"], **_ci_kwargs(n_resamples, seed, confidence)))
    domains = _order(t.index.get_level_values("domain"), DOMAIN_ORDER)
    rows = list(dict.fromkeys((m, k) for m, k, _ in t.index))
    out = pd.concat({d: t.xs(d, level="domain") for d in domains}, axis=1)
    out = out.reindex(pd.MultiIndex.from_tuples(rows, names=["method", "mask"]))
    out.columns.names = ["domain", None]
    return out


def correct_incorrect_table(df: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0,
                            confidence: float = 0.95) -> pd.DataFrame:
    """Correct vs incorrect predictions of the clips in ``df`` (one model, condition, domain).

    Rows (method, mask); columns (``correct`` | ``incorrect``, ``M``/``M lo``/``M hi``/``n``):
    means over the clips the model classifies correctly / incorrectly (``is_correct``), with
    bootstrap 95% CIs; ``n`` the clips on each side.
    """
    d = df.assign(prediction=np.where(df["is_correct"].astype(int) == 1, "correct", "incorrect"))
    t = mean_table(d, ["method", "mask", "prediction"], **_ci_kwargs(n_resamples, seed, confidence))
    return _unstack_prediction(t)


def _unstack_prediction(t: pd.DataFrame) -> pd.DataFrame:
    preds = [p for p in ("correct", "incorrect") if p in set(t.index.get_level_values("prediction"))]
    rows = list(dict.fromkeys((m, k) for m, k, _ in t.index))
    out = pd.concat({p: t.xs(p, level="prediction") for p in preds}, axis=1)
    out = out.reindex(pd.MultiIndex.from_tuples(rows, names=["method", "mask"])).dropna(how="all")
    out.columns.names = ["prediction", None]
    return out


def correct_incorrect_tables(df: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0,
                             confidence: float = 0.95) -> dict:
    """``{(model, condition, domain): correct_incorrect_table}`` for every combination in ``df``."""
    d = df.assign(prediction=np.where(df["is_correct"].astype(int) == 1, "correct", "incorrect"))
    t = mean_table(d, _CELL + ["prediction"], **_ci_kwargs(n_resamples, seed, confidence))
    out = {}
    flat = t.reset_index()
    for key, sub in flat.groupby(["model", "condition", "domain"], sort=False):
        out[key] = _unstack_prediction(sub.drop(columns=["model", "condition", "domain"])
                                       .set_index(["method", "mask", "prediction"]))
    return dict(sorted(out.items(), key=lambda kv: _key_rank(kv[0], ["model", "condition", "domain"])))


def summary_table(df: pd.DataFrame, *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (model, condition, domain, method): metrics averaged over the masks every
    method shares (the 14 masks; a learned interpreter's ``native`` mask is left out so every
    row averages the same masks, see :func:`native_table`) and all clips.

    CIs resample whole clips (their 14 mask rows together); ``n`` counts rows (clips x masks).
    """
    return mean_table(df[df["mask"] != NATIVE], ["model", "condition", "domain", "method"],
                      **_ci_kwargs(n_resamples, seed, confidence))


def native_table(cells: pd.DataFrame, mask: str = DEFAULT_MASK, domain: str = "spectrogram") -> pd.DataFrame:
    """The learned interpreters' own masks (rows ``piq (native)``, ``l2i (native)``) beside every
    method's ``mask``, per (model, condition): a slice of :func:`cell_table` (same CIs).

    Raises:
        ConfigError: no native-mask rows, or ``mask`` / ``domain`` not in the results.
    """
    src = cells.reset_index()
    if not (src["mask"] == NATIVE).any():
        raise ConfigError("no native-mask rows (the learned methods piq / l2i) in the results")
    mask, domain = _pick(src, "mask", mask), _pick(src, "domain", domain)
    sel = src[src["mask"].isin([mask, NATIVE]) & (src["domain"] == domain)].copy()
    native = sel["mask"] == NATIVE
    sel.loc[native, "method"] = sel.loc[native, "method"] + " (native)"
    t = sel.drop(columns=["mask", "domain"]).set_index(["model", "condition", "method"])
    ranks = [{v: j for j, v in enumerate(_order(t.index.get_level_values(i), pref))} for i, pref in
             enumerate([[], CONDITION_ORDER, [m for b in METHOD_ORDER for m in (b, f"{b} (native)")]])]
    return t.loc[sorted(t.index, key=lambda r: tuple(k[v] for k, v in zip(ranks, r)))]


def accuracy_table(results: str | Path, model: str | None = None, *, df: pd.DataFrame | None = None,
                   n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Accuracy of the (clean-trained) model per listening condition, rebuilt from ``results``.

    Rows (model, condition). Columns:

    * ``accuracy``, ``accuracy lo``, ``accuracy hi``: fraction of the fold's clips classified
      correctly under the condition (``run.json["accuracy"]``, identical for every method run of
      the cell; a warning if they differ) and its percentile-bootstrap CI over clips (the
      per-clip correctness vector with round(accuracy x n) ones, :func:`bootstrap_ci`);
    * ``n``: clips of the fold (``run.json["n_clips_fold"]``);
    * ``source``: ``run.json``, or ``csv`` for a cell without a run.json accuracy, whose accuracy is
      then that of the logged clips (``is_correct``);
    * ``recon_snr_db``, ``recon_snr_db lo``, ``recon_snr_db hi``: mean reconstruction SNR (dB) of the
      unmasked clips re-synthesised to audio, from the CSVs, with its CI over clips (NaN when
      the CSVs predate it);
    * ``noise`` (file of the mixed-in noise, ``none`` for clean), ``noise_snr_db`` (mixing SNR, dB).

    Args:
        results: the results folder.
        model: one model (None: all).
        df: :func:`load_results` of the same folder, if already loaded (else read here).

    Raises:
        ResultsError: neither ``run.json`` nor CSVs under ``results`` (names the folder).
        ConfigError: unknown ``model``.
    """
    _check_ci_args(n_resamples, confidence)
    if df is None:
        try:
            df = load_results(results, model)
        except ResultsError:
            df = None
    try:
        runs = run_table(results, model)
    except ResultsError:
        if df is None:
            raise
        runs = pd.DataFrame(columns=["model", "method", "condition", "accuracy", "n_clips", "noise", "noise_snr_db"])
    clips = None if df is None else df.drop_duplicates(["model", "condition", "filename"])  # first row per clip
    cells = list(dict.fromkeys(zip(runs["model"], runs["condition"])))
    if clips is not None:
        cells += [c for c in dict.fromkeys(zip(clips["model"], clips["condition"])) if c not in cells]
    rows = []
    for mdl, cond in cells:
        sub = runs[(runs["model"] == mdl) & (runs["condition"] == cond)]
        accs = sub["accuracy"].dropna()
        if accs.nunique() > 1:
            warnings.warn(f"{mdl}/{cond}: run.json accuracies differ between methods ({sorted(accs.unique())}); "
                          f"using the first", stacklevel=2)
        n = sub["n_clips"].dropna()
        if len(accs) and len(n):
            acc, n, source = float(accs.iloc[0]), int(n.iloc[0]), "run.json"
            k = int(round(acc * n))
            correct = np.r_[np.ones(k), np.zeros(n - k)]
        elif clips is not None and ((clips["model"] == mdl) & (clips["condition"] == cond)).any():
            correct = clips.loc[(clips["model"] == mdl) & (clips["condition"] == cond), "is_correct"].to_numpy(float)
            acc, n, source = float(correct.mean()), len(correct), "csv"
        else:
            correct, acc, n, source = np.array([]), np.nan, 0, ""
        _, lo, hi = bootstrap_ci(correct, n_resamples, seed, confidence)
        rows.append({"model": mdl, "condition": cond, "accuracy": acc, "accuracy lo": lo, "accuracy hi": hi,
                     "n": n, "source": source,
                     "noise": sub["noise"].iloc[0] if len(sub) else "", "noise_snr_db": sub["noise_snr_db"].iloc[0]
                     if len(sub) else np.nan})
    table = pd.DataFrame(rows).set_index(["model", "condition"])
    snr_cols = _ci_columns(["recon_snr_db"])
    if clips is not None and clips["recon_snr_db"].notna().any():
        snr = mean_table(clips, ["model", "condition"], ["recon_snr_db"], cluster=None,
                         **_ci_kwargs(n_resamples, seed, confidence))
        table = table.join(snr[snr_cols])
    else:
        table = table.assign(**{c: np.nan for c in snr_cols})
    table = table[["accuracy", "accuracy lo", "accuracy hi", "n", "source", *snr_cols, "noise", "noise_snr_db"]]
    return _sort_rows(table, ["model", "condition"])


# --------------------------------------------------------------------------- figures

def _figure(nrows, ncols, size):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()


def _bars_with_ci(ax, data: pd.DataFrame, x: str, hue: str, metric: str, x_order, hue_order, palette):
    """seaborn bar plot of precomputed means with the table's CI bounds as error bars."""
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
    """Bar figure of a :func:`condition_method_table` (one model): one panel per metric, conditions
    on the x axis, methods as colours, the bootstrap 95% CI as error bars. Writes a PNG."""
    import seaborn as sns

    data = table.reset_index()
    conds = _order(data["condition"], CONDITION_ORDER)
    methods = _order(data["method"], METHOD_ORDER)
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
    """Scatter of the audio-domain mean against the spectrogram-domain mean of every
    (condition, method, mask) cell of ``model`` (a :func:`cell_table`), one panel per metric,
    with the identity line (points on it: re-synthesis changes nothing). Writes a PNG."""
    import seaborn as sns

    flat = cells.reset_index()
    flat = flat[flat["model"] == model]
    wide = flat.pivot_table(index=["condition", "method", "mask"], columns="domain", values=METRIC_NAMES)
    methods = _order(flat["method"], METHOD_ORDER)
    conds = _order(flat["condition"], CONDITION_ORDER)
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
    """Bars of an :func:`accuracy_table`: accuracy per condition (models as colours) with 95%
    CI error bars, and the mean reconstruction SNR (dB) beside it when known. Writes a PNG."""
    import seaborn as sns

    data = acc.reset_index()
    models = _order(data["model"], [])
    conds = _order(data["condition"], CONDITION_ORDER)
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


# --------------------------------------------------------------------------- build

def _safe(s) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", str(s))


def _clean_out(out: Path, full: bool) -> None:
    """Remove files an earlier build_tables wrote: the legacy flat layout always, and (full
    rebuild only) this layout's generated files, so ``out`` never holds two layouts or stale
    cells. Only files matching build_tables' own name patterns are removed."""
    stale = [p for pat in _LEGACY for ext in (".csv", ".md") for p in out.glob(pat + ext)]
    if full:
        stale += [p for pat in ("conditions_*", "domains_*") for ext in (".csv", ".md", ".tex")
                  for p in out.glob(pat + ext)]
        stale += [p for d in _SUBDIRS for ext in (".csv", ".md", ".tex", ".png") for p in (out / d).glob("*" + ext)]
    for p in stale:
        if p.is_file():
            p.unlink()


def build_tables(results: str | Path = "results", out: str | Path = "supplementary", model: str | None = None,
                 mask: str = DEFAULT_MASK, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                 figures: bool = True) -> dict:
    """Rebuild every table and figure from ``results`` alone and export them to ``out``.

    Layout of ``out`` in the module docstring: each table as ``.csv`` (every number; metric
    headers with arrows, CI bounds as ``M lo``/``M hi``), ``.md`` (``mean [lo, hi]``, best in bold)
    and ``.tex``; ``tables.md`` is an index with the key tables inline. A full rebuild
    (``model=None``) first removes the files an earlier build wrote (including the older flat
    ``per_method_*``/``per_mask_*``/``correct_vs_incorrect_*`` files); a one-model build only
    overwrites.

    Args:
        results: the results folder.
        out: the output folder (created).
        model: one model only (None: all).
        mask: the mask of the condition x method tables and bar figures.
        n_resamples, seed, confidence: the bootstrap of every CI (:func:`bootstrap_ci`).
        figures: also write the PNG figures.

    Returns:
        dict: ``data`` (the long table), ``cells`` (:func:`cell_table`), ``summary``, ``summary_markdown``,
        ``accuracy``, ``conditions`` (``{domain: condition x method table for mask}``), ``domains``
        (``{(model, condition): domain_table}``), ``per_method``, ``per_mask``, ``correct_incorrect``
        (``{(model, condition, domain): table}``), ``figures`` (PNG paths), ``files`` (all written
        paths), ``mask``.

    Raises:
        ResultsError: nothing under ``results`` (names the folder).
        ConfigError: unknown ``model`` or ``mask`` (lists the valid ones), bad bootstrap settings.
    """
    _check_ci_args(n_resamples, confidence)
    df = load_results(results, model)
    mask = _pick(df, "mask", mask)
    ci = _ci_kwargs(n_resamples, seed, confidence)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clean_out(out, full=model is None)
    files: list[Path] = []

    def export(table, stem, title, best_within=None):
        path = out / stem
        path.parent.mkdir(parents=True, exist_ok=True)
        flat = with_arrows(table)
        if isinstance(flat.columns, pd.MultiIndex):  # one header row: "spectrogram FF ↑", "correct n"
            flat.columns = [" ".join(map(str, c)) for c in flat.columns]
        flat.to_csv(path.with_suffix(".csv"), float_format="%.6g")
        md = to_markdown(table, title, best_within=best_within)
        path.with_suffix(".md").write_text(md + "\n")
        path.with_suffix(".tex").write_text(to_latex(table, title, label="tab:" + _safe(stem).replace("/", "-"),
                                                     best_within=best_within) + "\n")
        files.extend(path.with_suffix(s) for s in (".csv", ".md", ".tex"))
        return md

    def link(stem, text):
        return f"[{text}]({stem}.md)"

    cells = cell_table(df, **ci)
    summary = summary_table(df, **ci)
    acc = accuracy_table(results, model, df=df, **ci)
    per_method = per_method_tables(df, cells=cells)
    per_mask = per_mask_tables(df, cells=cells)
    correct = correct_incorrect_tables(df, **ci)
    domains_present = _order(df["domain"], DOMAIN_ORDER)
    conditions = {d: condition_method_table(None, mask, domain=d, cells=cells) for d in domains_present}
    domains = {}
    for mdl in _order(df["model"], []):
        for cond in _order(df.loc[df["model"] == mdl, "condition"], CONDITION_ORDER):
            domains[(mdl, cond)] = domain_table(None, mdl, cond, cells=cells)

    cond_within = ["model", "condition"]
    ci_note = (f"Cells: mean over clips [{confidence:.0%} percentile-bootstrap CI, {n_resamples} resamples, "
               f"seed {seed}]; ↑ higher is better, ↓ lower is better; best value in bold. "
               "AI/AD/AG in %, recon SNR in dB.")
    index = ["# Supplementary tables", "",
             f"Rebuilt from `{Path(results).name}/` by `audiointerp.tables.build_tables`. {ci_note} "
             "Every table also as `.csv` (all numbers) and `.tex`.", ""]
    summary_md = export(summary, "summary", "Summary: means over all masks and clips",
                        best_within=["model", "condition", "domain"])
    index += ["## Summary", "", summary_md, ""]
    index += ["## Accuracy per condition", "", export(acc, "accuracy", "Accuracy and reconstruction SNR per condition",
                                                      best_within="model"), ""]
    index += [f"## Condition × method, mask `{mask}`", ""]
    for dom, t in conditions.items():
        index += [export(t, f"conditions_{_safe(mask)}_{dom}", f"Mask {mask} · {dom} domain: conditions × methods",
                         best_within=cond_within), ""]
    if (df["mask"] == NATIVE).any():
        index += [f"## Learned interpreters' native masks beside every method's `{mask}`", ""]
        for dom in domains_present:
            index += [export(native_table(cells, mask, dom), f"native_{_safe(mask)}_{dom}",
                             f"{dom} domain: PIQ / L2I native masks and every method's {mask}",
                             best_within=cond_within), ""]
    index += ["## Spectrogram vs audio domain", ""]
    for (mdl, cond), t in domains.items():
        stem = f"domains_{_safe(mdl)}_{_safe(cond)}"
        export(t, stem, f"{mdl} · {cond}: spectrogram vs audio domain")
        index.append(f"- {link(stem, f'{mdl} · {cond}')}")
    index += ["", "## Correct vs incorrect predictions", ""]
    for (mdl, cond, dom), t in correct.items():
        stem = f"correct_vs_incorrect/{_safe(mdl)}_{_safe(cond)}_{dom}"
        export(t, stem, f"{mdl} · {cond} · {dom}: correct vs incorrect predictions")
        index.append(f"- {link(stem, f'{mdl} · {cond} · {dom}')}")
    index += ["", "## Per mask: conditions × methods", ""]
    for msk in _order(df["mask"], MASK_NAMES):
        links = []
        for dom in domains_present:
            stem = f"per_mask/{_safe(msk)}_{dom}"
            export(condition_method_table(None, msk, domain=dom, cells=cells), stem,
                   f"Mask {msk} · {dom} domain: conditions × methods", best_within=cond_within)
            links.append(link(stem, dom))
        index.append(f"- `{msk}`: " + ", ".join(links))
    index += ["", "## Per method: masks as rows", ""]
    for (mdl, cond, dom, meth), t in per_method.items():
        stem = f"per_method/{_safe(mdl)}_{_safe(cond)}_{dom}_{meth}"
        export(t, stem, f"{mdl} · {cond} · {dom} · {meth}: masks")
        index.append(f"- {link(stem, f'{mdl} · {cond} · {dom} · {meth}')}")

    figs = []
    if figures:
        for mdl in _order(df["model"], []):
            for dom in domains_present:
                t = conditions[dom]
                t = t[t.index.get_level_values("model") == mdl].droplevel("model")
                if not t.empty:
                    figs.append(plot_condition_bars(t, out / "figures" / f"conditions_{_safe(mask)}_{_safe(mdl)}_{dom}.png",
                                                    f"{mdl} · {dom} domain · mask {mask}: means with 95% bootstrap CI"))
            if len(domains_present) > 1:
                figs.append(plot_domains(cells, mdl, out / "figures" / f"domains_{_safe(mdl)}.png"))
        if acc["accuracy"].notna().any():
            figs.append(plot_accuracy(acc, out / "figures" / "accuracy.png"))
        index += ["", "## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figs]
        files += figs
    (out / "tables.md").write_text("\n".join(index) + "\n")
    files.append(out / "tables.md")
    return {"data": df, "cells": cells, "summary": summary, "summary_markdown": summary_md, "accuracy": acc,
            "conditions": conditions, "domains": domains, "per_method": per_method, "per_mask": per_mask,
            "correct_incorrect": correct, "figures": figs, "files": files, "mask": mask}
