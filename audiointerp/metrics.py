"""Faithfulness and simplicity metrics of masks, per clip.

With ``p = softmax f(x)`` ``[batch, n_classes]``, ``c = argmax p`` (the predicted class) and
``p_in``/``p_out`` the probabilities on the masked input x_in and its complement x_out
(:func:`audiointerp.masks.apply_mask`); probabilities come from ONE softmax of the logits
(never a softmax of probabilities):

===========  ====================================================  ======  =====================
metric       formula                                                better  source
===========  ====================================================  ======  =====================
FF           p_c - p_out,c                                         higher  faithfulness (removal)
AI           100 * 1[p_in,c > p_c + eps]                            higher  Chattopadhay et al. 2018
AD           100 * max(0, p_c - p_in,c) / p_c                       lower   Chattopadhay et al. 2018
AG           100 * max(0, p_in,c - p_c) / (1 - p_c)                 higher  Zhang et al. 2024 (AG)
FidIn        1[argmax p_in = c]                                     higher  Paissan et al. 2023 (PIQ)
SPS          Gini index of m / max m                                higher  Chalasani et al. 2020; Quantus Sparseness
COMP         entropy (nats) of |m| / sum |m|                        lower   Bhatt et al. 2020; Quantus Complexity
===========  ====================================================  ======  =====================

AI ignores increases no larger than ``eps`` (1e-6 by default): a mask that changes nothing
must not count as an increase because batched float arithmetic differs in the last bits.
A constant mask (including all zeros) is treated as uniform: SPS 0 (least sparse) and
COMP = ln N (most complex), never the "simplest".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import unknown_name

AI_EPS = 1e-6


@dataclass(frozen=True)
class Metric:
    """A metric's name, direction and unit (tables mark arrows and best values from these)."""

    name: str
    higher_is_better: bool
    unit: str
    description: str

    @property
    def arrow(self) -> str:
        """'↑' when higher is better, else '↓'."""
        return "↑" if self.higher_is_better else "↓"


METRICS = {
    "FF": Metric("FF", True, "probability", "faithfulness: drop of p_c when the mask is removed"),
    "AI": Metric("AI", True, "%", "average increase: share of clips whose p_c rises on x_in"),
    "AD": Metric("AD", False, "%", "average drop of p_c on x_in, relative to p_c"),
    "AG": Metric("AG", True, "%", "average gain of p_c on x_in, relative to 1 - p_c"),
    "FidIn": Metric("FidIn", True, "fraction", "input fidelity: x_in keeps the predicted class"),
    "SPS": Metric("SPS", True, "Gini index", "sparseness of the mask"),
    "COMP": Metric("COMP", False, "nats", "complexity: entropy of the normalised mask"),
}
METRIC_NAMES = list(METRICS)


def _pc(p: torch.Tensor, other: torch.Tensor):
    if p.shape != other.shape or p.dim() != 2:
        raise ValueError(f"probabilities must both be [batch, n_classes], got {tuple(p.shape)} and {tuple(other.shape)}")
    c = p.argmax(1, keepdim=True)
    return p.gather(1, c)[:, 0], other.gather(1, c)[:, 0], c[:, 0]


def ff(p: torch.Tensor, p_out: torch.Tensor) -> torch.Tensor:
    """Faithfulness ``p_c - p_out,c`` ``[batch]`` from probabilities ``[batch, n_classes]``."""
    pc, poc, _ = _pc(p, p_out)
    return pc - poc


def ai(p: torch.Tensor, p_in: torch.Tensor, eps: float = AI_EPS) -> torch.Tensor:
    """Average increase ``100 * 1[p_in,c > p_c + eps]`` ``[batch]`` (%)."""
    pc, pic, _ = _pc(p, p_in)
    return 100.0 * (pic - pc > eps).to(p.dtype)


def ad(p: torch.Tensor, p_in: torch.Tensor) -> torch.Tensor:
    """Average drop ``100 * max(0, p_c - p_in,c) / p_c`` ``[batch]`` (%)."""
    pc, pic, _ = _pc(p, p_in)
    return 100.0 * (pc - pic).clamp_min(0) / pc.clamp_min(torch.finfo(p.dtype).tiny)


def ag(p: torch.Tensor, p_in: torch.Tensor) -> torch.Tensor:
    """Average gain ``100 * max(0, p_in,c - p_c) / (1 - p_c)`` ``[batch]`` (%); 0 when p_c = 1."""
    pc, pic, _ = _pc(p, p_in)
    room = 1 - pc
    gain = (pic - pc).clamp_min(0)
    return torch.where(room > 0, 100.0 * gain / room.clamp_min(torch.finfo(p.dtype).tiny), torch.zeros_like(pc))


def fid_in(p: torch.Tensor, p_in: torch.Tensor) -> torch.Tensor:
    """Input fidelity ``1[argmax p_in = argmax p]`` ``[batch]`` (0 or 1)."""
    _pc(p, p_in)
    return (p_in.argmax(1) == p.argmax(1)).to(p.dtype)


def _flat_abs(m: torch.Tensor) -> torch.Tensor:
    if m.dim() < 2:
        raise ValueError(f"masks must be [batch, ...], got shape {tuple(m.shape)}")
    return m.reshape(m.shape[0], -1).abs().double()


def sps(m: torch.Tensor) -> torch.Tensor:
    """Sparseness: Gini index of ``|m| / max |m|`` per clip, ``[batch]`` in [0, 1).

    Gini = sum_k (2k - N - 1) a_(k) / (N sum_k a_(k)) over the ascending values a_(k)
    (Hurley & Rickard 2009; Chalasani et al., ICML 2020; as Quantus ``Sparseness``). A constant
    mask (all zeros included) scores 0.
    """
    a = _flat_abs(m)
    mx = a.amax(1, keepdim=True)
    a = torch.where(mx > 0, a / mx.clamp_min(1e-300), torch.ones_like(a))
    a, _ = a.sort(1)
    n = a.shape[1]
    k = torch.arange(1, n + 1, dtype=a.dtype, device=a.device)
    return ((2 * k - n - 1) * a).sum(1) / (n * a.sum(1))


def comp(m: torch.Tensor) -> torch.Tensor:
    """Complexity: Shannon entropy (nats) of ``|m| / sum |m|`` per clip, ``[batch]`` in [0, ln N].

    (Bhatt et al., IJCAI 2020; as Quantus ``Complexity``.) A constant mask (all zeros
    included) scores ln N, the most complex.
    """
    a = _flat_abs(m)
    s = a.sum(1, keepdim=True)
    pr = torch.where(s > 0, a / s.clamp_min(1e-300), torch.full_like(a, 1.0 / a.shape[1]))
    return -(torch.where(pr > 0, pr * pr.log(), torch.zeros_like(pr))).sum(1)


def score(p: torch.Tensor, p_in: torch.Tensor, p_out: torch.Tensor, m: torch.Tensor,
          mask_scores: dict | None = None) -> dict[str, torch.Tensor]:
    """All seven metrics, each ``[batch]`` (float64 for SPS/COMP, else p's dtype).

    ``mask_scores`` may pass SPS and COMP already computed for the same masks (they depend on
    the mask only, so the audio domain reuses the spectrogram domain's).
    """
    ms = mask_scores if mask_scores is not None else {"SPS": sps(m), "COMP": comp(m)}
    return {"FF": ff(p, p_out), "AI": ai(p, p_in), "AD": ad(p, p_in), "AG": ag(p, p_in),
            "FidIn": fid_in(p, p_in), "SPS": ms["SPS"], "COMP": ms["COMP"]}


def metric(name: str) -> Metric:
    """The :class:`Metric` called ``name``; raises ConfigError listing the valid names."""
    if name not in METRICS:
        raise unknown_name("metric", name, METRICS)
    return METRICS[name]
