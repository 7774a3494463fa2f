"""Masks from attribution maps, and their application to dB features.

Per clip, over the whole map, with ``A`` the signed attribution ``[batch, 1, F, T]``,
``A+ = max(A, 0)`` and ``q_p(A)`` the per-clip p-quantile (linear interpolation):

========================  ==================================================================
``minmax``                (A - min A) / (max A - min A)   (a constant map gives zeros)
``sigmoid``               sigma(A)
``bin``                   1[A > 0]
``topK_<k%>``             1[A >= q_{1-k}(A)]
``minmax_pos``            A+ / max A+   (zeros when nothing is positive)
``sigmoid_pos``           sigma(A+)
``pos_thresh_<tau%>``     1[minmax_pos >= tau]
``topK_<k%>_pos``         the top round(k*N) values that are strictly positive; when fewer
                          are positive, just the positive ones -- never an all-ones mask
========================  ==================================================================

The 14 standard masks use k in {5, 30, 50} % and tau in {25, 50, 75} % (the course-project
prior art); :func:`make_masks` takes other k and tau as arguments.

Masks act in dB above the -100 dB floor (:func:`apply_mask`):
``x_in = (x + 100) * m - 100`` keeps what the mask selects, ``x_out = (x + 100) * (1 - m) - 100``
keeps the complement; written as ``x - (1 - m) * (x + 100)`` so an all-ones mask returns x
exactly (and an all-zeros mask returns x exactly for ``x_out``).
"""

from __future__ import annotations

import torch

from .errors import ConfigError, unknown_name
from .processing import FLOOR_DB

DEFAULT_K = (0.05, 0.30, 0.50)
DEFAULT_TAU = (0.25, 0.50, 0.75)
NATIVE = "native"  # a learned interpreter's own mask (PIQ, L2I), scored beside the 14 masks


def _flat(a: torch.Tensor) -> torch.Tensor:
    if a.dim() < 2:
        raise ConfigError(f"attribution must be [batch, ...], got shape {tuple(a.shape)}")
    return a.reshape(a.shape[0], -1)


def _view(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (a.dim() - 1)))


def minmax(a: torch.Tensor) -> torch.Tensor:
    """(A - min A)/(max A - min A) per clip, in [0, 1]; a constant map gives zeros. Shape kept."""
    f = _flat(a)
    lo, hi = _view(f.amin(1), a), _view(f.amax(1), a)
    span = hi - lo
    return torch.where(span > 0, (a - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(a))


def sigmoid(a: torch.Tensor) -> torch.Tensor:
    """sigma(A) elementwise, in (0, 1)."""
    return torch.sigmoid(a)


def binary(a: torch.Tensor) -> torch.Tensor:
    """1[A > 0] as float."""
    return (a > 0).to(a.dtype)


def top_k(a: torch.Tensor, k: float) -> torch.Tensor:
    """1[A >= q_{1-k}(A)] per clip: about the top fraction ``k`` (ties can add more).

    Raises:
        ConfigError: ``k`` outside (0, 1].
    """
    check_fraction("k", k)
    f = _flat(a)
    q = torch.quantile(f.float(), 1.0 - k, dim=1)
    return (a >= _view(q.to(a.dtype), a)).to(a.dtype)


def minmax_pos(a: torch.Tensor) -> torch.Tensor:
    """A+ / max A+ per clip, in [0, 1]; zeros when no value is positive."""
    ap = a.clamp_min(0)
    mx = _view(_flat(ap).amax(1), a)
    return torch.where(mx > 0, ap / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(a))


def sigmoid_pos(a: torch.Tensor) -> torch.Tensor:
    """sigma(A+): 0.5 where A <= 0, up to 1."""
    return torch.sigmoid(a.clamp_min(0))


def pos_threshold(a: torch.Tensor, tau: float) -> torch.Tensor:
    """1[minmax_pos(A) >= tau]; all zeros when nothing is positive.

    Raises:
        ConfigError: ``tau`` outside (0, 1].
    """
    check_fraction("tau", tau)
    return (minmax_pos(a) >= tau).to(a.dtype)


def top_k_pos(a: torch.Tensor, k: float) -> torch.Tensor:
    """The top ``round(k*N)`` strictly positive values per clip (N = elements of a clip).

    When fewer than ``round(k*N)`` values are positive, only the positive ones are kept, so
    the mask is never all ones on a map that has non-positive values.

    Raises:
        ConfigError: ``k`` outside (0, 1].
    """
    check_fraction("k", k)
    f = _flat(a)
    n = max(1, int(round(k * f.shape[1])))
    idx = f.topk(n, dim=1).indices
    sel = torch.zeros_like(f, dtype=torch.bool).scatter_(1, idx, True)
    return (sel & (f > 0)).to(a.dtype).view_as(a)


def check_fraction(name: str, v: float) -> None:
    """Raise ConfigError unless mask parameter ``name`` (k or tau) is a fraction in (0, 1]."""
    if not (0 < float(v) <= 1):
        raise ConfigError(f"mask parameter {name} must be in (0, 1], got {v!r}")


def _pct(v: float) -> str:
    return f"{round(100 * v):d}"


def mask_names(k=DEFAULT_K, tau=DEFAULT_TAU) -> list[str]:
    """Names of the masks :func:`make_masks` builds for these k and tau, in table order."""
    return (["minmax", "sigmoid", "bin"] + [f"topK_{_pct(v)}" for v in k] + ["minmax_pos", "sigmoid_pos"]
            + [f"pos_thresh_{_pct(t)}" for t in tau] + [f"topK_{_pct(v)}_pos" for v in k])


MASK_NAMES = mask_names()


def make_masks(a: torch.Tensor, k=DEFAULT_K, tau=DEFAULT_TAU, names=None) -> dict[str, torch.Tensor]:
    """All masks of attribution ``a`` ``[batch, 1, F, T]`` (signed, float32).

    Args:
        a: attribution maps.
        k: fractions for ``topK_*`` and ``topK_*_pos``.
        tau: thresholds for ``pos_thresh_*``.
        names: subset of :func:`mask_names` to build (default all).

    Returns:
        dict name -> mask ``[batch, 1, F, T]`` in [0, 1], ordered as :func:`mask_names`.

    Raises:
        ConfigError: unknown mask name (lists the valid ones), k or tau outside (0, 1].
    """
    valid = mask_names(k, tau)
    names = valid if names is None else list(names)
    for n in names:
        if n not in valid:
            raise unknown_name("mask", n, valid)
    out = {}
    for n in names:
        if n == "minmax":
            out[n] = minmax(a)
        elif n == "sigmoid":
            out[n] = sigmoid(a)
        elif n == "bin":
            out[n] = binary(a)
        elif n == "minmax_pos":
            out[n] = minmax_pos(a)
        elif n == "sigmoid_pos":
            out[n] = sigmoid_pos(a)
        elif n.startswith("pos_thresh_"):
            out[n] = pos_threshold(a, dict(zip([f"pos_thresh_{_pct(t)}" for t in tau], tau))[n])
        elif n.endswith("_pos"):
            out[n] = top_k_pos(a, dict(zip([f"topK_{_pct(v)}_pos" for v in k], k))[n])
        else:
            out[n] = top_k(a, dict(zip([f"topK_{_pct(v)}" for v in k], k))[n])
    return out


def apply_mask(x: torch.Tensor, m: torch.Tensor, floor: float = FLOOR_DB) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep / remove the masked part of dB features.

    Args:
        x: features ``[batch, 1, F, T]`` in dB (>= ``floor``).
        m: mask of the same shape (or broadcastable), values in [0, 1].
        floor: the silence level in dB (-100).

    Returns:
        ``(x_in, x_out)``: ``(x - floor) * m + floor`` and ``(x - floor) * (1 - m) + floor``;
        an all-ones mask gives ``x_in == x`` exactly, an all-zeros mask ``x_out == x`` exactly.
    """
    level = x - floor
    return x - (1 - m) * level, x - m * level
