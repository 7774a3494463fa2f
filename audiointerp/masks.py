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
``topK_<k%>_pos``         1[A >= q_{1-k}(A)] * 1[A > 0]: topK's threshold, positive bins only
========================  ==================================================================

**Tie rule.** ``topK_<k%>`` and ``topK_<k%>_pos`` share one rule: the threshold is the
(1 - k)-quantile over the whole map and every bin at or above it is kept, so bins tied at the
threshold are kept together (a piecewise-constant map -- LIME's superpixels, Occlusion's windows
-- is never split inside a piece, and the fraction kept can exceed k by the tied bins).
``topK_<k%>_pos`` also drops the bins with ``A <= 0``: on a map with non-positive values it is
never all ones, and on a map that is positive everywhere it equals ``topK_<k%>``.
*Results written before issue 12* used the old ``topK_<k%>_pos`` rule -- "the top
``round(k*N)`` strictly positive values", which kept exactly ``round(k*N)`` bins and split a tied
piece by index order; on maps without ties (Saliency, Grad-CAM, SHAP) the two rules differ by at
most one bin per clip (the quantile's interpolation). Tables are rebuilt from the per-clip logs,
so logs written before the change keep the old rule's numbers; rerun a method's folder to get the
new rule (:data:`MASK_RULES` tells them apart).

The 14 standard masks use k in {5, 30, 50} % and tau in {25, 50, 75} % (the course-project
prior art); :func:`make_masks` takes other k and tau as arguments.

Masks act in dB above the -100 dB floor (:func:`apply_mask`):
``x_in = (x + 100) * m - 100`` keeps what the mask selects, ``x_out = (x + 100) * (1 - m) - 100``
keeps the complement; written as ``x - (1 - m) * (x + 100)`` so an all-ones mask returns x
exactly (and an all-zeros mask returns x exactly for ``x_out``).
"""

from __future__ import annotations

import re

import torch

from .errors import ConfigError, unknown_name
from .processing import FLOOR_DB

DEFAULT_K = (0.05, 0.30, 0.50)
DEFAULT_TAU = (0.25, 0.50, 0.75)
NATIVE = "native"  # a learned interpreter's own mask (PIQ, L2I), scored beside the 14 masks
#: version of the mask rules, for a run's configuration key: 2 = ``topK_<k%>_pos`` follows topK's
#: tie rule (issue 12); 1 = before (the top ``round(k*N)`` positive values)
MASK_RULES = 2


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
    """``1[A >= q_{1-k}(A)] * 1[A > 0]`` per clip: :func:`top_k`'s mask, positive bins only.

    The threshold is the (1 - k)-quantile over the whole map (not over its positive values), so
    bins tied at the threshold are kept together, as in :func:`top_k` (see the tie rule in the
    module docstring); the mask is never all ones on a map that has non-positive values, and
    equals :func:`top_k` on a map that is positive everywhere. Shape and dtype of ``a`` kept.

    Results written before issue 12 used the old rule (the top ``round(k*N)`` strictly positive
    values, ties split by index order); their logs keep those numbers.

    Raises:
        ConfigError: ``k`` outside (0, 1].
    """
    return top_k(a, k) * (a > 0).to(a.dtype)


def check_fraction(name: str, v: float) -> None:
    """Raise ConfigError unless mask parameter ``name`` (k or tau) is a fraction in (0, 1]."""
    try:
        ok = 0 < float(v) <= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"mask parameter {name} must be a fraction in (0, 1], got {v!r}")


#: Mask families; those with a parameter carry it in their name as a percentage.
MASK_FAMILIES = ("minmax", "sigmoid", "bin", "topK", "minmax_pos", "sigmoid_pos", "pos_thresh", "topK_pos")
#: The parameter of each parameterised family: k (fraction kept) or tau (threshold).
PARAMETER = {"topK": "k", "topK_pos": "k", "pos_thresh": "tau"}
_NAME_RE = re.compile(r"(topK|pos_thresh)_(\d+(?:\.\d+)?)(_pos)?")


def percent(v: float) -> str:
    """A fraction as the percentage in a mask name: ``0.3 -> "30"``, ``0.301 -> "30.1"``,
    ``0.001 -> "0.1"`` (6 significant digits, no trailing zeros)."""
    return f"{100 * float(v):g}"


def mask_name(family: str, value: float | None = None) -> str:
    """The name of a mask: ``("topK", 0.3) -> "topK_30"``, ``("topK_pos", 0.05) -> "topK_5_pos"``,
    ``("pos_thresh", 0.5) -> "pos_thresh_50"``, ``("minmax", None) -> "minmax"``.

    Raises:
        ConfigError: unknown family; a parameterised family without a fraction in (0, 1].
    """
    if family not in MASK_FAMILIES:
        raise unknown_name("mask family", family, MASK_FAMILIES)
    if family not in PARAMETER:
        return family
    check_fraction(PARAMETER[family], value)
    if family == "topK_pos":
        return f"topK_{percent(value)}_pos"
    return f"{family}_{percent(value)}"


def parse_mask_name(name: str) -> tuple[str, float | None]:
    """Split a mask name into its family of :data:`MASK_FAMILIES` and the fraction in its name.

    ``topK_25 -> ("topK", 0.25)``, ``topK_5_pos -> ("topK_pos", 0.05)``, ``pos_thresh_50 ->
    ("pos_thresh", 0.5)``, ``minmax -> ("minmax", None)``; a bare family of a parameterised kind
    (``topK``) gives ``(family, None)``.

    Raises:
        ConfigError: unknown mask name (lists the families and the standard names), or a
            fraction outside (0, 1] (e.g. ``topK_0``, ``topK_150``).
    """
    name = str(name)
    m = _NAME_RE.fullmatch(name)
    if m and not (m.group(1) == "pos_thresh" and m.group(3)):
        family = m.group(1) + (m.group(3) or "")
        value = float(m.group(2)) / 100
        check_fraction(PARAMETER[family], value)
        return family, value
    if name in MASK_FAMILIES:
        return name, None
    raise unknown_name("mask", name, [*MASK_FAMILIES, *mask_names()])


def resolve_mask_name(mask: str, k: float | None = None, tau: float | None = None) -> str:
    """The full mask name from a name or a family plus its fraction (for widgets and notebooks).

    ``mask`` is a full name (``minmax``, ``topK_25``, ``topK_5_pos``, ``pos_thresh_50``) or a
    parameterised family (``topK``, ``topK_pos``, ``pos_thresh``) whose fraction comes from ``k``
    / ``tau``. A fraction given both ways must agree to 0.5 percentage points; ``k`` / ``tau`` are
    ignored by masks without a parameter.

    Raises:
        ConfigError: unknown mask, a fraction outside (0, 1], a missing or contradictory k / tau
            (the values are quoted).
    """
    family, value = parse_mask_name(mask)
    if family not in PARAMETER:
        return family
    param = PARAMETER[family]
    given = k if param == "k" else tau
    if value is not None and given is not None and abs(float(given) - value) > 0.005:
        raise ConfigError(f"mask {mask!r} means {param}={value:g}, but {param}={given!r} was given")
    value = value if value is not None else given
    if value is None:
        raise ConfigError(f"mask family {family!r} needs {param} (a fraction in (0, 1])")
    return mask_name(family, float(value))


def _specs(k=DEFAULT_K, tau=DEFAULT_TAU) -> list[tuple[str, str, float | None]]:
    """``(name, family, fraction)`` of every mask for these k and tau, in table order.

    Raises:
        ConfigError: empty k or tau, a value outside (0, 1], or two values that would share a
            name (e.g. k = 0.3 and 0.3000001 both give ``topK_30``).
    """
    for pname, values in (("k", k), ("tau", tau)):
        values = list(values)
        if not values:
            raise ConfigError(f"mask parameter {pname} needs at least one value")
        labels = {}
        for v in values:
            check_fraction(pname, v)
            label = percent(v)
            if label in labels and float(labels[label]) != float(v):
                raise ConfigError(f"mask parameter {pname}: {labels[label]!r} and {v!r} would share the mask name "
                                  f"suffix {label!r} (names carry the percentage to 6 significant digits); "
                                  f"give values that differ in their name")
            if label in labels:
                raise ConfigError(f"mask parameter {pname} lists {v!r} twice")
            labels[label] = v
    out = [(f, f, None) for f in ("minmax", "sigmoid", "bin")]
    out += [(mask_name("topK", v), "topK", float(v)) for v in k]
    out += [(f, f, None) for f in ("minmax_pos", "sigmoid_pos")]
    out += [(mask_name("pos_thresh", t), "pos_thresh", float(t)) for t in tau]
    out += [(mask_name("topK_pos", v), "topK_pos", float(v)) for v in k]
    return out


def mask_names(k=DEFAULT_K, tau=DEFAULT_TAU) -> list[str]:
    """Names of the masks :func:`make_masks` builds for these k and tau, in table order.

    Raises:
        ConfigError: see :func:`_specs` (bad or colliding k / tau values).
    """
    return [name for name, _, _ in _specs(k, tau)]


MASK_NAMES = mask_names()

_BUILDERS = {"minmax": minmax, "sigmoid": sigmoid, "bin": binary, "minmax_pos": minmax_pos,
             "sigmoid_pos": sigmoid_pos, "topK": top_k, "topK_pos": top_k_pos, "pos_thresh": pos_threshold}


def make_masks(a: torch.Tensor, k=DEFAULT_K, tau=DEFAULT_TAU, names=None) -> dict[str, torch.Tensor]:
    """All masks of attribution ``a`` ``[batch, 1, F, T]`` (signed, float32).

    Args:
        a: attribution maps.
        k: fractions for ``topK_*`` and ``topK_*_pos``.
        tau: thresholds for ``pos_thresh_*``.
        names: masks to build (default all of :func:`mask_names`); a name outside those of ``k``
            and ``tau`` is built from the fraction in its name (``topK_25``).

    Returns:
        dict name -> mask ``[batch, 1, F, T]`` in [0, 1], in the order of ``names``.

    Raises:
        ConfigError: unknown mask name (lists the valid ones), k or tau outside (0, 1] or
            colliding (:func:`mask_names`), a parameterised family without its fraction.
    """
    specs = {name: (family, v) for name, family, v in _specs(k, tau)}
    names = list(specs) if names is None else list(names)
    out = {}
    for n in names:
        family, v = specs[n] if n in specs else parse_mask_name(n)
        if family in PARAMETER:
            if v is None:
                raise ConfigError(f"mask family {family!r} needs its {PARAMETER[family]} in the name, e.g. "
                                  f"{mask_name(family, 0.3)!r}")
            out[n] = _BUILDERS[family](a, v)
        else:
            out[n] = _BUILDERS[family](a)
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


def apply_log1p_mask(L: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep / remove the masked part of a log1p magnitude, as L2I, PIQ and L-MAC apply their masks.

    Args:
        L: ``log(1 + |STFT|)`` ``[..., n_fft//2+1, n_frames]`` (:func:`audiointerp.processing.log1p_stft`).
        m: mask in [0, 1], broadcastable to ``L``.

    Returns:
        ``(magnitude_in, magnitude_out)``: the linear magnitudes ``expm1(m ⊙ L)`` and
        ``expm1((1 − m) ⊙ L)`` (Parekh et al., NeurIPS 2022; Paissan et al., 2023); an all-ones
        mask gives ``|STFT|`` back in ``magnitude_in``, zeros in ``magnitude_out``.
    """
    return torch.expm1(m * L), torch.expm1((1 - m) * L)
