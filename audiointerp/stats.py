"""Seeded percentile-bootstrap confidence intervals of means (the CIs of every table).

:func:`bootstrap_ci` is the percentile bootstrap (Efron & Tibshirani 1993, *An Introduction to
the Bootstrap*, ch. 13) with exactly the draws of ``scipy.stats.bootstrap(..., method="percentile",
rng=seed)``: the resamples are ``numpy.random.default_rng(seed).integers(0, n, (n_resamples, n))``,
so the bounds equal SciPy's up to rounding. The resamples are held as a ``[n_resamples, n]`` count
matrix (how often each unit is drawn), so the bootstrap means of many columns and of many groups
of the same size come out of one matrix product (:func:`_bootstrap_groups`, used by
:func:`audiointerp.tables.mean_table`).

This module is the lowest layer of the tables: it imports neither :mod:`audiointerp.render` nor
:mod:`audiointerp.tables`.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import pandas as pd

from .errors import ConfigError

__all__ = ["bootstrap_ci"]

_CACHE_ELEMENTS = 1 << 22  # draw matrices up to this size (32 MiB) are cached and drawn in one batch
_CHUNK_ELEMENTS = 1 << 23  # bound on the [n_resamples, columns] blocks of bootstrap means


@lru_cache(maxsize=8)
def _resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """``[n_resamples, n]`` float matrix: how often each of n units is drawn in each resample.

    The draws are ``default_rng(seed).integers(0, n, (n_resamples, n))``, the draws of
    :func:`scipy.stats.bootstrap` with ``rng=seed`` (one batch). Read-only (cached).
    """
    return _counts(np.random.default_rng(seed).integers(0, n, (n_resamples, n)), n)


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """``[b, n]`` read-only float counts of the unit indices ``idx`` ``[b, n]`` (ints in ``[0, n)``)."""
    b = idx.shape[0]
    counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n).astype(float)
    counts.flags.writeable = False
    return counts


def _draws(n: int, n_resamples: int, seed: int):
    """Yield the count matrices of the resamples, ``[rows, n]`` each, ``n_resamples`` rows in all.

    One cached batch, or (for ``n * n_resamples`` above ``_CACHE_ELEMENTS``) successive row batches
    of one seeded generator, as SciPy's ``batch``.
    """
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

    ``c``, ``w``: ``[units, k]`` float (sums and counts of non-NaN values per unit); group g holds
    units ``bounds[g]:bounds[g + 1]`` (``bounds`` ``[groups + 1]`` int, non-decreasing). Groups of
    equal size share one draw matrix (:func:`_draws` of that size), so all their columns go through
    one matrix product, and a group's bounds equal those of its units bootstrapped alone.

    Returns:
        ``(point, lo, hi)``, each ``[groups, k]`` float; NaN for an empty group, NaN bounds when
        ``n_resamples`` is 0.

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
    """Validate the bootstrap settings.

    Raises:
        ConfigError: ``n_resamples < 0`` or ``confidence`` outside (0, 1) (the value is named).

    """
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
        values: ``[n]`` or ``[n, k]`` float-convertible (k columns, each with its own CI), in the
            values' own unit (the mean and bounds come in that unit).
        n_resamples: number of resamples (0: no CI, bounds NaN).
        seed: seed of the draws.
        confidence: coverage of the interval, in (0, 1).
        clusters: optional ``[n]`` labels; whole clusters (e.g. the clips, whose rows for
            several masks are not independent) are resampled instead of rows, and the statistic
            is the mean of all rows drawn. With one row per cluster this equals the row bootstrap.

    Returns:
        ``(mean, lo, hi)``: floats for 1-D ``values``, ``[k]`` float arrays for 2-D; NaN for no values.

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
