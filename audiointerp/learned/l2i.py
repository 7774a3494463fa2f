"""L2I: Listen to Interpret (Parekh et al., "Listen to Interpret: Post-hoc Interpretability for
Audio Networks with NMF", NeurIPS 2022; SpeechBrain's ESC-50 recipe).

A fixed NMF dictionary ``W [F, K]`` (:mod:`audiointerp.nmf`); an interpreter network ψ maps the
classifier's hidden map to non-negative activations ``H [K, n_frames]``; a surrogate classifier θ
(mean over time, then linear to classes) mimics the classifier. Loss:
``α·MSE(W H, L) + β·mean|H| + CE(θ(H), softmax(f(x)/τ))`` (α = 10, β = 0.8, τ = 1), the
classifier's softmax applied once (to its logits). For class c, the relevance of component k is
``r_k = θ_{c,k} · mean_t H_k``; ``S = {k : r_k > 0.2 · max_k r_k}``; the native mask is the ratio
mask ``M = W_S H_S / (W H + ε)`` in [0, 1] over ``L = log(1 + |STFT|)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .base import match_size


class L2IInterpreter(nn.Module):
    """L2I's interpreter ψ and surrogate classifier θ over a fixed NMF dictionary.

    Args:
        W: NMF dictionary float32 ``[n_fft//2+1, K]`` (fixed: a buffer, not a parameter).
        hidden_shape: the classifier's hidden map ``(channels, F', T')``.
        n_frames: STFT frames of a clip (the activations' length).
        n_classes: classifier outputs.
        width: ψ's channels.
        alpha, beta, tau: loss weights (reconstruction, L1 sparsity) and the temperature of the
            classifier's softmax in the fidelity term.

    ``activations(hidden) -> H [batch, K, n_frames]`` (>= 0); ``surrogate(H) -> logits``.
    """

    kind = "l2i"

    def __init__(self, W: torch.Tensor, hidden_shape, n_frames: int, n_classes: int, width: int = 256,
                 alpha: float = 10.0, beta: float = 0.8, tau: float = 1.0):
        super().__init__()
        W = torch.as_tensor(W, dtype=torch.float32)
        if W.dim() != 2 or (W < 0).any():
            raise ConfigError(f"the NMF dictionary must be non-negative [F, K], got shape {tuple(W.shape)}")
        self.register_buffer("W", W.clone())
        c, f, t = (int(v) for v in hidden_shape)
        self.hidden_shape, self.n_frames, self.n_classes = (c, f, t), int(n_frames), int(n_classes)
        self.alpha, self.beta, self.tau = float(alpha), float(beta), float(tau)
        k = W.shape[1]
        self.psi_in = nn.Sequential(nn.Conv1d(c * f, width, 3, padding=1), nn.ReLU(),
                                    nn.Conv1d(width, width, 3, padding=1), nn.ReLU())
        self.psi_out = nn.Sequential(nn.Conv1d(width, width, 5, padding=2), nn.ReLU(), nn.Conv1d(width, k, 1))
        self.theta = nn.Linear(k, n_classes)

    @property
    def n_components(self) -> int:
        """K, the number of dictionary components (columns of W)."""
        return int(self.W.shape[1])

    def activations(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[batch, C, F', T'] -> H [batch, K, n_frames]`` (ReLU, non-negative)."""
        z = self.psi_in(hidden.flatten(1, 2))
        z = match_size(z, (self.n_frames,), max_ratio=64)
        return F.relu(self.psi_out(z))

    def surrogate(self, H: torch.Tensor) -> torch.Tensor:
        """θ: mean over time, then linear: ``[batch, K, T] -> logits [batch, n_classes]``."""
        return self.theta(H.mean(-1))

    def reconstruct(self, H: torch.Tensor) -> torch.Tensor:
        """``W H``: ``[batch, K, T] -> [batch, n_fft//2+1, T]``."""
        return torch.matmul(self.W, H)

    def losses(self, hidden: torch.Tensor, L: torch.Tensor, logits: torch.Tensor) -> dict:
        """The loss terms for a batch (the classifier's ``logits`` are detached targets).

        Returns:
            ``{"total", "reconstruction", "sparsity", "fidelity"}`` scalar tensors, where
            total = α·reconstruction + β·sparsity + fidelity and fidelity =
            CE(θ(H), softmax(logits/τ)) (one softmax on the classifier side).
        """
        H = self.activations(hidden)
        rec = F.mse_loss(self.reconstruct(H), L)
        sparse = H.abs().mean()
        fid = F.cross_entropy(self.surrogate(H), torch.softmax(logits.detach() / self.tau, dim=1))
        return {"total": self.alpha * rec + self.beta * sparse + fid, "reconstruction": rec, "sparsity": sparse,
                "fidelity": fid}

    def relevance(self, H: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``r_k = θ_{c,k} · mean_t H_k`` for class ``target`` ``[batch]``: ``[batch, K]``."""
        return self.theta.weight[target] * H.mean(-1)

    def selected(self, r: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
        """``S = {k : r_k > threshold · max r}`` as a float ``[batch, K]`` 0/1; when no component
        has positive relevance, the single most relevant one (never an empty set)."""
        top = r.amax(1, keepdim=True)
        s = (r > threshold * top) & (top > 0)
        s |= (top <= 0) & (r == top)
        return s.float()

    def component_masks(self, H: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """Per-component ratio masks ``W_k H_k / (W H + ε)``: ``[batch, K, F, T]``, each in [0, 1],
        summing over k to ``W H / (W H + ε) <= 1``."""
        parts = self.W.T[None, :, :, None] * H[:, :, None, :]
        return parts / (parts.sum(1, keepdim=True) + eps)

    def ratio_mask(self, H: torch.Tensor, S: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """L2I's mask ``W_S H_S / (W H + ε)``: ``[batch, F, T]`` in [0, 1]."""
        return self.reconstruct(H * S[:, :, None]) / (self.reconstruct(H) + eps)

    def explain(self, hidden: torch.Tensor, target: torch.Tensor, threshold: float = 0.2,
                eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask [batch, F, T] in [0, 1], map [batch, F, T] in [-1, 1])``.

        The map is the relevance-weighted ratio ``Σ_k r̂_k W_k H_k / (W H + ε)`` with
        ``r̂ = r / max|r|``: positive where components that vote for the class dominate.
        """
        H = self.activations(hidden)
        r = self.relevance(H, target)
        mask = self.ratio_mask(H, self.selected(r, threshold), eps)
        rn = r / r.abs().amax(1, keepdim=True).clamp_min(1e-12)
        amap = self.reconstruct(H * rn[:, :, None]) / (self.reconstruct(H) + eps)
        return mask, amap
