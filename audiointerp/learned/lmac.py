"""L-MAC: Listenable Maps for Audio Classifiers (Paissan, Ravanelli, Subakan, ICML 2024; SpeechBrain's
ESC-50 recipe ``recipes/ESC50/interpret/train_lmac.py``, ``hparams/lmac_cnn14.yaml``).

A decoder reads several block outputs of the frozen classifier (:class:`~audiointerp.learned.base.HiddenMaps`),
fuses them by addition after transposed convolutions, deepest first (as SpeechBrain's ``CNN14PSI_stft``), and
outputs a sigmoid mask ``M`` over the clip's linear-frequency ``L = log(1 + |STFT|)``
``[batch, n_fft//2+1, n_frames]`` (:func:`~audiointerp.learned.base.match_size`: every frame covered).
The masked-in and masked-out magnitudes ``expm1(M ⊙ L)`` and ``expm1((1 − M) ⊙ L)`` are mapped to the
classifier's features (:func:`audiointerp.processing.magnitude_to_features`) and go through the frozen
classifier: gradients reach the decoder through the classifier's input, never its weights. Loss, with c the
classifier's prediction on the clip (the decoder's input)::

    l_in·CE(f(x_in), c) − l_out·CE(f(x_out), c) + l1·mean_b mean|M_b|      (l_in 4, l_out 0.2, l1 6.4)

**The sparsity weight.** The reference sums ``0.4·mean|M_b|`` over the items of a batch of 16 while both
cross-entropies are batch means, so its effective weight on the per-item mean is 0.4 × 16 = 6.4 and would
change with the batch size. Here every term is a per-item mean and ``l1 = 6.4`` reproduces the reference's
balance between faithfulness and sparsity at any batch size.

**Guided fine-tuning (L-MAC FT).** On a noisy mixture (:func:`mix_with_partners`: the clip mixed with another
training clip of a different class at the project's default level, α = 0.6, about 3.5 dB, partners drawn
from a seeded generator), items whose masked-in mixture ``M ⊙ L_mix`` correlates with the clean clip's
``L_clean`` at or above ``corr_threshold`` = 0.6 (cosine similarity over the whole spectrogram, the
reference's ``dotp`` cross-correlation) get ``guide·BCE(M, 1[L_clean ≥ 0.35·max L_clean])`` (guide = 4;
averaged over the whole batch, 0 for the other items) and, as in the reference, no L1 term; c is then the
prediction on the mixture. An FT checkpoint is of the same kind, ``lmac``, with ``training["guided"]`` true
(:func:`lmac_variant` says ``lmac_ft``); it starts from a trained L-MAC checkpoint.

**The explained class.** As in the paper, the decoder sees only the classifier's hidden representations of
the clip and its loss uses the predicted class: the mask does not depend on a requested target class.
:func:`lmac_explain` accepts ``target`` for the common interface, ignores it and warns when it differs from
the prediction.

The listenable interpretation is ``ISTFT(expm1(M ⊙ L)·e^{iφ})`` with the clip's phase φ (:func:`listenable`).

**Cost.** The loss needs the classifier's forward and backward passes on x_in and x_out at every step; only
the frozen forward of the clean clip (block outputs, logits, L) can be cached. The decoder works at a quarter
of the STFT's frequency resolution and half its frame rate by default (``coarse``) and its logits are
interpolated to every bin and frame, which keeps it cheaper than the classifier on a CPU.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..processing import FeatureConfig, inverse_log1p_stft, log1p_stft, magnitude_to_features
from .base import HiddenMaps, match_size

#: the reference's loss weights (lmac_cnn14.yaml: l_in_w 4, l_out_w 0.2, reg_w_l1 0.4 summed over a batch of 16,
#: g_w 4 for L-MAC FT, crosscor_th 0.6, bin_th 0.35)
L_IN, L_OUT, L1, GUIDE, CORR_THRESHOLD, GUIDE_THRESHOLD = 4.0, 0.2, 6.4, 4.0, 0.6, 0.35


def guidance_target(L_clean: torch.Tensor, threshold: float = GUIDE_THRESHOLD) -> torch.Tensor:
    """L-MAC FT's target ``1[L_clean ≥ threshold · max L_clean]`` (max per clip) of ``[batch, F, T]``, float32."""
    peak = L_clean.flatten(1).amax(1)[:, None, None]
    return (L_clean >= threshold * peak).float()


def guidance_correlation(masked: torch.Tensor, L_clean: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``<a, b> / (|a|·|b|)`` per item over the whole ``[F, T]`` plane (the reference's
    ``dotp`` cross-correlation: mean product over the product of root mean squares), float32 ``[batch]``;
    0 when either is all zeros. In [0, 1] for the non-negative ``M ⊙ L_mix`` and ``L_clean``."""
    a, b = masked.flatten(1), L_clean.flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def draw_partners(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each clip, the index of another clip of a *different* class (uniform, from ``generator``): int64 ``[n]``.

    A clip whose class is the only one in the set gets another clip of its class (never itself when
    ``n`` > 1). One draw of ``n`` uniforms from ``generator`` whatever the labels, so a saved generator
    state reproduces the partners.
    """
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    n = len(labels)
    u = torch.rand(n, generator=generator)
    idx = torch.arange(n)
    partner = torch.empty(n, dtype=torch.long)
    for i in range(n):
        pool = idx[labels != labels[i]]
        if len(pool) == 0:
            pool = idx[idx != i] if n > 1 else idx
        partner[i] = pool[min(int(u[i] * len(pool)), len(pool) - 1)]
    return partner


def mix_with_partners(wav: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                      alpha: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """L-MAC FT's noisy mixtures: each clip mixed with another clip of a different class of the same set
    (:func:`draw_partners`).

    Args:
        wav: float32 ``[n, n_samples]`` clips; labels: int64 ``[n]`` their classes.
        generator: draws the partners (seeded by the caller: the same state gives the same mixtures).
        alpha: the clip's weight (:func:`audiointerp.noise.mix`: both RMS-normalised, then
            ``alpha·clip + (1 − alpha)·partner``, peak-normalised; 0.6 is about 3.5 dB).

    Returns:
        ``(mixtures float32 [n, n_samples], partner indices int64 [n])``.

    Raises:
        ConfigError: bad ``alpha`` (:func:`audiointerp.noise.mixing_alpha`) or shapes that do not match.
    """
    from ..noise import mix

    labels = torch.as_tensor(labels).reshape(-1)
    if wav.dim() != 2 or len(labels) != len(wav):
        raise ConfigError(f"mix_with_partners needs wav [n, n_samples] and labels [n], got {tuple(wav.shape)} "
                          f"and {tuple(labels.shape)}")
    partner = draw_partners(labels, generator)
    return mix(wav, wav[partner], alpha=alpha), partner


def magnitude_classifier(model: nn.Module, cfg: FeatureConfig):
    """``classify(magnitude [batch, n_fft//2+1, n_frames]) -> logits [batch, n_classes]``: the classifier on
    the features of linear STFT magnitudes (:func:`audiointerp.processing.magnitude_to_features`), differentiable
    with respect to the magnitudes (the model's own parameters are not touched)."""
    def classify(mag: torch.Tensor) -> torch.Tensor:
        x = magnitude_to_features(mag, cfg).contiguous(memory_format=torch.channels_last)
        return model(x)
    return classify


def _up_stages(size: tuple[int, int], target: tuple[int, int]) -> list[tuple[int, int]]:
    """Per-stage (freq, time) strides (1 or 2) that bring ``size`` within a factor √2 of ``target``."""
    n = [max(0, round(math.log2(t / s))) for s, t in zip(size, target)]
    return [tuple(2 if j < k else 1 for k in n) for j in range(max(n))]


def _upconv(c_in: int, c_out: int, stride: tuple[int, int]) -> nn.ConvTranspose2d:
    """A transposed convolution that multiplies each axis by its stride exactly (kernel 4 / padding 1 on a
    stride-2 axis, kernel 3 / padding 1 on a stride-1 axis)."""
    kernel = tuple(4 if s == 2 else 3 for s in stride)
    return nn.ConvTranspose2d(c_in, c_out, kernel, stride=stride, padding=1)


class LMACInterpreter(nn.Module):
    """L-MAC's decoder: several classifier blocks fused by addition → a sigmoid mask over the log1p STFT.

    Layers are given shallow to deep (forward order); decoding starts at the deepest. Each block output is
    projected to ``width`` channels by a 3×3 transposed convolution (stride 1) and ReLU; the running sum is
    carried to the next shallower block's size by a transposed convolution (stride 2 on an axis the block
    pooled, 1 otherwise), ReLU and :func:`match_size`, then added. A head of stride-2 transposed convolutions
    (halving the channels, at least 8) reaches about ``out_shape / coarse``, a 3×3 convolution gives one
    channel of mask logits, and bilinear interpolation (:func:`match_size`) the exact ``out_shape``: every
    STFT bin and frame has a value. ``coarse`` (default 4 in frequency, 2 in time: about 125 Hz × 20 ms
    cells at 16 kHz, n_fft 512, hop 160) keeps the decoder's cost on a CPU below the classifier's; (1, 1)
    decodes at full resolution, as the reference does on a GPU.

    Args:
        hidden_shapes: ``[(C_i, F_i, T_i)]`` of the block outputs, in the order of ``layers``.
        layers: the classifier's block names (``model.get_submodule`` paths) the shapes belong to.
        out_shape: ``(n_fft//2+1, n_frames)`` of the log1p STFT the mask covers.
        width: decoder channels.
        coarse: ``(freq, time)`` factors by which the decoder's own output is coarser than ``out_shape``
            (powers of 2; bilinear interpolation covers them).
        l_in, l_out, l1: loss weights (module docstring; 4, 0.2, 6.4).
        guide, corr_threshold, guide_threshold: L-MAC FT's guidance weight, correlation threshold and
            target level (4, 0.6, 0.35).

    Raises:
        ConfigError: no layers, a number of shapes other than the number of layers, or a bad ``coarse``.
    """

    kind = "lmac"

    def __init__(self, hidden_shapes, layers, out_shape, width: int = 64, coarse=(4, 2), l_in: float = L_IN,
                 l_out: float = L_OUT, l1: float = L1, guide: float = GUIDE, corr_threshold: float = CORR_THRESHOLD,
                 guide_threshold: float = GUIDE_THRESHOLD):
        super().__init__()
        shapes = [tuple(int(v) for v in s) for s in hidden_shapes]
        layers = [str(n) for n in layers]
        if not shapes or len(shapes) != len(layers) or any(len(s) != 3 for s in shapes):
            raise ConfigError(f"L-MAC needs one (C, F, T) shape per layer, got {len(shapes)} shapes {shapes} for "
                              f"layers {layers}")
        self.hidden_shapes, self.layers = shapes, layers
        self.out_shape, self.width = tuple(int(v) for v in out_shape), int(width)
        self.coarse = tuple(int(v) for v in coarse)
        if len(self.coarse) != 2 or any(v < 1 or v & (v - 1) for v in self.coarse):
            raise ConfigError(f"coarse must be two powers of 2 (freq, time), got {coarse!r}")
        self.l_in, self.l_out, self.l1 = float(l_in), float(l_out), float(l1)
        self.guide, self.corr_threshold = float(guide), float(corr_threshold)
        self.guide_threshold = float(guide_threshold)
        deep_first = shapes[::-1]
        self.lateral = nn.ModuleList(nn.ConvTranspose2d(c, self.width, 3, stride=1, padding=1)
                                     for c, _, _ in deep_first)
        ups = []
        for (_, f0, t0), (_, f1, t1) in zip(deep_first[:-1], deep_first[1:]):
            ups.append(_upconv(self.width, self.width, (2 if f1 >= 1.5 * f0 else 1, 2 if t1 >= 1.5 * t0 else 1)))
        self.up = nn.ModuleList(ups)
        head, ch = [], self.width
        for stride in _up_stages(shapes[0][1:], tuple(o / c for o, c in zip(self.out_shape, self.coarse))):
            out_ch = max(8, ch // 2)
            head += [_upconv(ch, out_ch, stride), nn.ReLU()]
            ch = out_ch
        self.head = nn.Sequential(*head, nn.Conv2d(ch, 1, 3, padding=1))

    def constructor_args(self) -> dict:
        """The constructor arguments (what the checkpoint stores to rebuild the decoder)."""
        return {"hidden_shapes": [list(s) for s in self.hidden_shapes], "layers": list(self.layers),
                "out_shape": list(self.out_shape), "width": self.width, "coarse": list(self.coarse),
                "l_in": self.l_in, "l_out": self.l_out, "l1": self.l1, "guide": self.guide,
                "corr_threshold": self.corr_threshold, "guide_threshold": self.guide_threshold}

    def check_hidden(self, hidden) -> None:
        """Raise ConfigError unless ``hidden`` is one ``[batch, C_i, F_i, T_i]`` per layer of the trained shapes
        (another classifier or clip length otherwise)."""
        got = [tuple(h.shape[1:]) for h in hidden]
        if got != self.hidden_shapes:
            raise ConfigError(f"the classifier's block outputs {got} (layers {self.layers}) are not the "
                              f"{self.hidden_shapes} the L-MAC decoder was trained on (another classifier or clip "
                              f"length)")

    def forward(self, hidden) -> torch.Tensor:
        """Mask logits float32 ``[batch, n_fft//2+1, n_frames]`` of the block outputs ``hidden`` (a list,
        shallow to deep, as :class:`~audiointerp.learned.base.HiddenMaps` returns them)."""
        hs = list(hidden)[::-1]
        h = F.relu(self.lateral[0](hs[0]))
        for up, lat, x in zip(self.up, self.lateral[1:], hs[1:]):
            h = match_size(F.relu(up(h)), tuple(x.shape[2:]), max_ratio=2.0) + F.relu(lat(x))
        return match_size(self.head(h), self.out_shape, max_ratio=2.0 * max(self.coarse))[:, 0]

    def losses(self, hidden, L: torch.Tensor, logits: torch.Tensor, classify,
               L_clean: torch.Tensor | None = None) -> dict:
        """The loss terms for a batch (module docstring).

        Args:
            hidden: the block outputs of the clip (or mixture) the mask is for, shallow to deep.
            L: its ``log(1 + |STFT|)`` ``[batch, n_fft//2+1, n_frames]``.
            logits: the classifier's logits on it ``[batch, n_classes]`` (c = argmax; detached).
            classify: ``magnitude [batch, F, T] -> logits`` (:func:`magnitude_classifier`); frozen.
            L_clean: the clean clips' log1p STFT for guided fine-tuning (None: plain L-MAC).

        Returns:
            scalar tensors ``{"total", "in", "out", "l1", "guide", "guided"}``: ``in`` / ``out`` the
            cross-entropies of the masked-in / masked-out inputs, ``l1`` the mean |M| over the batch, ``guide``
            the batch mean of the gated BCE (0 without ``L_clean``) and ``guided`` the fraction of items that
            passed the correlation threshold; ``total = l_in·in − l_out·out + l1·mean_b(1 − g_b)·mean|M_b| +
            guide·guide`` with ``g_b`` the item's gate (0 without ``L_clean``).
        """
        z = self(hidden)
        M = torch.sigmoid(z)
        c = logits.detach().argmax(1)
        n = len(L)
        both = classify(torch.cat([torch.expm1(M * L), torch.expm1((1 - M) * L)]))
        ce_in, ce_out = F.cross_entropy(both[:n], c), F.cross_entropy(both[n:], c)
        l1_b = M.abs().flatten(1).mean(1)
        if L_clean is None:
            gate = torch.zeros(n, device=L.device)
            guide = torch.zeros((), device=L.device)
        else:
            with torch.no_grad():
                gate = (guidance_correlation(M * L, L_clean) >= self.corr_threshold).float()
            bce = F.binary_cross_entropy_with_logits(z, guidance_target(L_clean, self.guide_threshold),
                                                     reduction="none").flatten(1).mean(1)
            guide = (bce * gate).mean()
        total = self.l_in * ce_in - self.l_out * ce_out + self.l1 * (l1_b * (1 - gate)).mean() + self.guide * guide
        return {"total": total, "in": ce_in, "out": ce_out, "l1": l1_b.mean(), "guide": guide, "guided": gate.mean()}

    def explain(self, hidden, target=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask [batch, F, T] = sigmoid(logits) in [0, 1], map [batch, F, T] = the logits)``; ``target`` is
        accepted for the common interface and does not change the output (module docstring)."""
        z = self(hidden)
        return torch.sigmoid(z), z


def lmac_explain(net: LMACInterpreter, model: nn.Module, x: torch.Tensor, target=None,
                 warn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """L-MAC's mask and map for features ``x``, the classifier's block outputs captured with forward hooks.

    Args:
        net: a trained :class:`LMACInterpreter` (e.g. from ``load_interpreter(path, classifier_checkpoint,
            kind="lmac")``).
        model: the classifier it was trained for (run in eval mode for the call; its mode is restored).
        x: features float32 ``[batch, 1, n_freq, n_frames]`` (dB).
        target: int ``[batch]`` (or one int) classes. L-MAC's decoder is not conditioned on a class (Paissan
            et al., ICML 2024: it reads the hidden representations only and is trained on the predicted class),
            so ``target`` changes nothing; a warning says so when it differs from the prediction.
        warn: warn about such targets (default True).

    Returns:
        ``(mask float32 [batch, n_fft//2+1, n_frames] in [0, 1], map float32 [batch, n_fft//2+1, n_frames])``,
        the map being the decoder's real-valued mask logits (no gradients).

    Raises:
        ConfigError: ``x`` not ``[batch, 1, F, T]``; a target count other than the batch size; block outputs of
            other shapes than the decoder was trained on (another classifier or clip length); a layer the model
            does not have (named).
    """
    if x.dim() != 4 or x.shape[1] != 1:
        raise ConfigError(f"lmac_explain expects x of shape [batch, 1, n_freq, n_frames], got {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    net.eval().to(x.device)
    try:
        with torch.no_grad():
            logits, hidden = HiddenMaps(model, net.layers)(x)
            net.check_hidden(hidden)
            mask, amap = net.explain(hidden)
    finally:
        model.train(was_training)
    if target is not None:
        t = torch.as_tensor(target, dtype=torch.long).reshape(-1).to(x.device)
        if t.numel() == 1:
            t = t.expand(len(x))
        if t.numel() != len(x):
            raise ConfigError(f"target has {t.numel()} entries for a batch of {len(x)}")
        differ = int((t != logits.argmax(1)).sum())
        if warn and differ:
            warnings.warn(f"L-MAC explains the predicted class: {differ} of {len(x)} targets differ from the "
                          f"prediction and were ignored (its decoder is not conditioned on a class)", stacklevel=2)
    return mask, amap


def listenable(mask: torch.Tensor, waveform: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """L-MAC's listenable interpretation ``ISTFT(expm1(M ⊙ L)·e^{iφ})`` with the clip's own phase φ.

    Args:
        mask: ``[batch, n_fft//2+1, n_frames]`` in [0, 1] (:func:`lmac_explain`).
        waveform: the clips ``[batch, n_samples]`` (float32) the mask is for.
        cfg: the classifier's feature configuration (its STFT).

    Returns:
        float32 ``[batch, n_samples]`` (an all-ones mask gives the clip back).

    Raises:
        ConfigError: a mask of another shape than the clips' STFT (both quoted).
    """
    L, spec = log1p_stft(waveform, cfg)
    if tuple(mask.shape) != tuple(L.shape):
        raise ConfigError(f"mask {tuple(mask.shape)} does not match the clips' STFT {tuple(L.shape)}")
    return inverse_log1p_stft(mask * L, torch.angle(spec), waveform.shape[-1], cfg)
