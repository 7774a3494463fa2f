"""PIQ: Posthoc Interpretation via Quantization (Paissan, Subakan, Ravanelli, 2023; SpeechBrain's
ESC-50 recipe).

Adapter (1×1 conv) → strided conv (downsample) → vector quantiser whose codebook is partitioned
by class (``keys_per_class`` keys each; an item is quantised with the keys of its predicted class
only; straight-through gradients) → transposed-convolution decoder → sigmoid mask over
``L = log(1 + |STFT|)``. Loss: ``BCE(mask, 1[L > 0.35 · max L]) + ||sg[z_e] − z_q||² +
0.25·||z_e − sg[z_q]||²`` (van den Oord et al., "Neural Discrete Representation Learning",
NeurIPS 2017).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import match_size


def energy_target(L: torch.Tensor, threshold: float = 0.35) -> torch.Tensor:
    """PIQ's training target ``1[L > threshold · max L]`` (max per clip) of ``[batch, F, T]``, float32."""
    peak = L.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (L > threshold * peak).float()


class PIQInterpreter(nn.Module):
    """PIQ: adapter, downsampling, class-partitioned vector quantiser, transposed-conv decoder.

    Args:
        hidden_shape: the classifier's hidden map ``(channels, F', T')``.
        out_shape: ``(n_fft//2+1, n_frames)`` of the log1p STFT the mask covers.
        n_classes: classifier outputs; the codebook has ``n_classes · keys_per_class`` keys of
            size ``dim`` and class c owns keys ``[c·keys_per_class, (c+1)·keys_per_class)``.
        width: adapter / decoder channels.
        commitment: weight of the commitment loss (0.25, van den Oord et al. 2017).
        threshold: the target mask's level, a fraction of the clip's max L (0.35).
    """

    kind = "piq"

    def __init__(self, hidden_shape, out_shape, n_classes: int, keys_per_class: int = 8, dim: int = 64,
                 width: int = 64, commitment: float = 0.25, threshold: float = 0.35):
        super().__init__()
        c, f, t = (int(v) for v in hidden_shape)
        self.hidden_shape, self.out_shape = (c, f, t), tuple(int(v) for v in out_shape)
        self.n_classes, self.keys_per_class = int(n_classes), int(keys_per_class)
        self.commitment, self.threshold = float(commitment), float(threshold)
        self.adapter = nn.Sequential(nn.Conv2d(c, width, 1), nn.ReLU(),
                                     nn.Conv2d(width, dim, 3, stride=2, padding=1))
        self.codebook = nn.Embedding(self.n_classes * self.keys_per_class, dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / self.keys_per_class, 1.0 / self.keys_per_class)
        ups = []
        ch = dim
        for out_ch in (width, width, width // 2, width // 4):
            ups += [nn.ConvTranspose2d(ch, out_ch, 4, stride=2, padding=1), nn.ReLU()]
            ch = out_ch
        self.decoder = nn.Sequential(*ups, nn.Conv2d(ch, 1, 3, padding=1))

    def encode(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[batch, C, F', T'] -> z_e [batch, dim, ⌈F'/2⌉, ⌈T'/2⌉]``."""
        return self.adapter(hidden)

    def quantise(self, z_e: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest key of each position among the keys of class ``target[b]`` only.

        Returns:
            ``(z_q [batch, dim, f, t], index int64 [batch, f, t])`` with global key indices, all in
            ``[target·keys_per_class, (target+1)·keys_per_class)``.
        """
        b, d, f, t = z_e.shape
        keys = self.codebook.weight.view(self.n_classes, self.keys_per_class, d)[target]  # [b, kpc, d]
        flat = z_e.permute(0, 2, 3, 1).reshape(b, f * t, d)
        local = torch.cdist(flat, keys).argmin(-1)  # [b, f*t]
        z_q = torch.gather(keys, 1, local[..., None].expand(b, f * t, d))
        index = local + target[:, None] * self.keys_per_class
        return z_q.reshape(b, f, t, d).permute(0, 3, 1, 2), index.reshape(b, f, t)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z [batch, dim, f, t] -> mask logits [batch, n_fft//2+1, n_frames]``: four stride-2
        transposed convolutions (16x), then the one-channel logits are interpolated to the exact
        STFT size (:func:`match_size`)."""
        return match_size(self.decoder(z), self.out_shape, max_ratio=16)[:, 0]

    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> dict:
        """``{"logits", "z_e", "z_q", "index"}``; the decoder sees the straight-through z_q."""
        z_e = self.encode(hidden)
        z_q, index = self.quantise(z_e, target)
        z_st = z_e + (z_q - z_e).detach()
        return {"logits": self.decode(z_st), "z_e": z_e, "z_q": z_q, "index": index}

    def losses(self, hidden: torch.Tensor, L: torch.Tensor, logits: torch.Tensor) -> dict:
        """``{"total", "mask", "codebook", "commitment"}`` for a batch; the codebook partition used
        is the classifier's predicted class (argmax of its ``logits``)."""
        out = self(hidden, logits.detach().argmax(1))
        bce = F.binary_cross_entropy_with_logits(out["logits"], energy_target(L, self.threshold))
        cb = F.mse_loss(out["z_q"], out["z_e"].detach())
        commit = F.mse_loss(out["z_e"], out["z_q"].detach())
        return {"total": bce + cb + self.commitment * commit, "mask": bce, "codebook": cb, "commitment": commit}

    def explain(self, hidden: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask [batch, F, T] = sigmoid(logits) in [0, 1], map [batch, F, T] = the logits)``."""
        logits = self(hidden, target)["logits"]
        return torch.sigmoid(logits), logits
