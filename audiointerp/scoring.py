"""The scoring layer: from a clip and its explanation to masked inputs, audio and metrics.

The steps every experiment shares, in one place, used alike by the runner
(:mod:`audiointerp.runner`, a whole fold), the illustration (:mod:`audiointerp.explore`, one
clip) and the overlap test (:mod:`audiointerp.overlap`, mixtures):

1. :func:`condition_features` — features of a dataset's clips under a listening condition
   (clean, or background noise mixed in), both from the content-addressed feature cache;
2. :func:`class_probabilities` — one softmax of the classifier's logits;
3. :func:`explain` — the attribution map of a method and, when the method has the
   :class:`~audiointerp.interpret.NativeMask` capability, its own mask (asked for here, so no
   caller branches on method names);
4. :func:`mask_stack` — the masks of the map (:func:`audiointerp.masks.make_masks`), with the
   native mask carried to the feature grid as the ``native`` entry;
5. :func:`score_masks` — x_in / x_out of every mask through the classifier in one batch per
   domain: ``spectrogram`` (the masked features as they are) and ``audio`` (re-synthesised with
   the clip's own STFT phase and re-analysed: what a listener hears), then the seven metrics of
   :mod:`audiointerp.metrics`.

Everything stays on the tensors' device; the metrics are computed in float32 (probabilities)
and float64 (SPS, COMP) whatever the device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .errors import ConfigError
from .interpret import Attribution, has_native_mask
from .masks import DEFAULT_K, DEFAULT_TAU, NATIVE, apply_log1p_mask, apply_mask, make_masks
from .metrics import comp, score, sps
from .models import predict_logits
from .processing import (
    features_only,
    linear_to_feature_grid,
    magnitude_to_audio,
    magnitude_to_features,
    reconstruction_snr_db,
    resynthesise,
    stft,
)

DOMAINS = ("spectrogram", "audio")


def condition_features(ds, fcfg, noise, progress: bool = False, batch_size: int = 64) -> torch.Tensor:
    """Features ``[n_clips, 1, n_freq, n_frames]`` (dB, float32) of every clip of ``ds`` under ``noise``.

    Both come from the content-addressed, file-locked on-disk cache, computed once per (clips,
    condition, feature configuration) and shared by every process (a run, the grid's workers):
    clean features from :func:`audiointerp.data.fold_features`; noisy ones, mixed by
    :meth:`audiointerp.noise.NoiseSpec.apply` in batches of ``batch_size`` clips, from
    :func:`audiointerp.data.mixed_features` (keyed by the clips' names and digests, the noise
    file's SHA-256, alpha, offset and the feature configuration).

    Args:
        ds: an :class:`audiointerp.data.ESC50`; fcfg: its feature configuration;
        noise: a :class:`audiointerp.noise.NoiseSpec`.

    Raises:
        DatasetError / AudioFileError: a missing or bad clip (named); ConfigError: a bad noise.
    """
    from .data import fold_features, mixed_features

    if noise.is_clean:
        return fold_features(ds, fcfg, batch_size=batch_size, progress=progress)
    return mixed_features(ds, fcfg, noise, batch_size=batch_size, progress=progress)


def class_probabilities(model, feats: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax of the logits (one softmax, never of probabilities), float32 ``[n, n_classes]``, of
    features ``[n, 1, F, T]`` (dB) in batches of ``batch_size`` (no gradients)."""
    return torch.softmax(predict_logits(model, feats, batch_size=batch_size), dim=1)


@dataclass
class Explanation:
    """What :func:`explain` returns.

    Attributes:
        attribution: float32 ``[batch, 1, F, T]`` signed map on the feature grid.
        native: the method's own mask over the log1p STFT, float32
            ``[batch, 1, n_fft//2+1, n_frames]`` in [0, 1], or None for a method without one.
    """

    attribution: torch.Tensor
    native: torch.Tensor | None = None


def explain(method: Attribution, x: torch.Tensor, target, seeds=None, native: bool = True) -> Explanation:
    """Explain ``target`` for features ``x [batch, 1, F, T]`` with ``method``.

    Args:
        method: from :func:`audiointerp.interpret.make_method`.
        target: int64 ``[batch]`` classes (the runner explains the prediction).
        seeds: per-clip seeds of stochastic methods (the clips' indices in their fold).
        native: also ask for the method's own mask when it has one.

    Returns:
        an :class:`Explanation` (``native`` None unless the method has the capability).
    """
    attr = method.attribute(x, target, seeds=seeds)
    nat = method.native_mask(x, target) if native and has_native_mask(method) else None
    return Explanation(attr, nat)


def mask_stack(expl: Explanation, names, fcfg, k=DEFAULT_K, tau=DEFAULT_TAU) -> torch.Tensor:
    """The masks of an explanation as one tensor ``[batch, n_masks, 1, F, T]`` in [0, 1].

    Args:
        expl: from :func:`explain`.
        names: mask names in the order wanted; ``native`` stands for the method's own mask,
            carried to the feature grid (:func:`audiointerp.processing.linear_to_feature_grid`),
            the others come from :func:`audiointerp.masks.make_masks` of the map.
        fcfg: the feature configuration; k, tau: the mask parameters.

    Raises:
        ConfigError: ``native`` asked for a method without its own mask; an unknown mask.
    """
    names = list(names)
    if NATIVE in names and expl.native is None:
        raise ConfigError("mask 'native' exists only for methods with a mask of their own (e.g. piq, l2i)")
    built = make_masks(expl.attribution, k, tau, names=[n for n in names if n != NATIVE])
    if NATIVE in names:
        built[NATIVE] = linear_to_feature_grid(expl.native, fcfg)
    return torch.stack([built[n] for n in names], dim=1)


@dataclass
class MaskScores:
    """What :func:`score_masks` returns.

    Attributes:
        x_in, x_out: masked features ``[batch, n_masks, 1, F, T]`` (dB).
        audio: re-synthesised x_in then x_out, float32 ``[batch, 2 * n_masks, n_samples]``
            (None without the audio domain).
        scores: ``{domain: {metric: [batch, n_masks]}}`` (CPU tensors).
        recon_snr_db: ``[batch]`` SNR (dB) of the unmasked clip through the re-synthesis (NaN
            without the audio domain).
        seconds: wall time per domain.
    """

    x_in: torch.Tensor
    x_out: torch.Tensor
    audio: torch.Tensor | None
    scores: dict
    recon_snr_db: torch.Tensor
    seconds: dict


def score_masks(scorer, probs: torch.Tensor, x: torch.Tensor, wav: torch.Tensor | None, m: torch.Tensor, fcfg,
                domains=DOMAINS, inversion: str = "gain", native: torch.Tensor | None = None) -> MaskScores:
    """Mask clips, run the classifier on x_in / x_out and score them in each domain.

    All masks of all clips go through the model in one batch per domain; ``audio``
    re-synthesises them with the clips' own STFT phase
    (:func:`audiointerp.processing.resynthesise`) and re-analyses the audio. SPS and COMP depend
    on the mask only and are computed once.

    Args:
        scorer: the classifier (eval mode; e.g. :func:`audiointerp.models.fuse_for_inference`).
        probs: softmax of the unmasked clips ``[batch, n_classes]``.
        x: features ``[batch, 1, F, T]`` (dB); wav: the clips ``[batch, n_samples]`` as the model
            hears them (needed for the audio domain and native masks only).
        m: masks ``[batch, n_masks, 1, F, T]`` in [0, 1].
        domains: ``spectrogram`` and/or ``audio``; inversion: ``gain`` or ``pinv``.
        native: a method's own masks over the log1p STFT, ``[batch, n_native, 1, n_fft//2+1,
            n_frames]`` in [0, 1], standing for the first ``n_native`` entries of ``m`` (their
            feature-grid versions, used for SPS and COMP). They are applied as PIQ / L2I / L-MAC apply
            them (:func:`audiointerp.masks.apply_log1p_mask`): x_in has the magnitude
            ``expm1(M ⊙ log1p|STFT|)`` and x_out ``expm1((1 − M) ⊙ log1p|STFT|)``; the audio domain
            is their ISTFT with the clip's phase.

    Returns:
        a :class:`MaskScores`.

    Raises:
        ConfigError: native masks or the audio domain without the clips' waveforms; an unknown
            domain.
    """
    for d in domains:
        if d not in DOMAINS:
            raise ConfigError(f"unknown domain {d!r}; valid domains: {', '.join(DOMAINS)}")
    x_in, x_out = apply_mask(x[:, None], m)
    b, nm = m.shape[:2]
    n_nat = 0 if native is None else native.shape[1]
    if (n_nat or "audio" in domains) and wav is None:
        raise ConfigError("native masks and the audio domain need the clips' waveforms (wav)")
    if wav is not None:  # everything on the features' device (one transfer per batch at most)
        wav = wav.to(x.device)
    probs = probs.to(x.device)
    spec = stft(wav, fcfg) if n_nat or "audio" in domains else None  # [b, n_lin, T], once per batch
    if n_nat:
        L = torch.log1p(spec.abs())[:, None]  # log1p_stft of the same STFT
        for j, mag in enumerate(apply_log1p_mask(L, native[:, :, 0])):
            (x_in, x_out)[j][:, :n_nat] = magnitude_to_features(mag.flatten(0, 1), fcfg).reshape(
                b, n_nat, *x.shape[1:])
    both = torch.cat([x_in, x_out], dim=1)  # [b, 2 * n_masks, 1, F, T]
    flat_m = m.reshape(b * nm, *m.shape[2:])
    mask_scores = {"SPS": sps(flat_m), "COMP": comp(flat_m)}  # the same in both domains
    p_rep = probs.repeat_interleave(nm, dim=0)
    scores, seconds, audio = {}, {}, None
    snr = torch.full((b,), float("nan"))
    with torch.no_grad():
        for dom in domains:
            t0 = time.perf_counter()
            if dom == "spectrogram":
                feats = both.reshape(b * 2 * nm, *x.shape[1:])
            else:
                if n_nat:  # the learned interpreters' own synthesis: ISTFT of expm1(M ⊙ L), clip phase
                    gain = [i for i in range(2 * nm) if i % nm >= n_nat]  # the other masks
                    audio = torch.empty(b, 2 * nm, fcfg.n_samples, device=x.device)
                    audio[:, gain] = resynthesise(both[:, gain], x[:, None], spec[:, None], fcfg.n_samples, fcfg,
                                                  inversion)
                    phase = torch.angle(spec)[:, None]
                    for j, mag in enumerate(apply_log1p_mask(L, native[:, :, 0])):
                        audio[:, j * nm:j * nm + n_nat] = magnitude_to_audio(
                            mag.flatten(0, 1), phase.expand_as(mag).flatten(0, 1), fcfg.n_samples, fcfg
                        ).reshape(b, n_nat, -1)
                else:
                    audio = resynthesise(both, x[:, None], spec[:, None], fcfg.n_samples, fcfg, inversion)
                feats = features_only(audio.reshape(b * 2 * nm, fcfg.n_samples), fcfg)
                plain = resynthesise(x[:, None], x[:, None], spec[:, None], fcfg.n_samples, fcfg, inversion)[:, 0]
                snr = reconstruction_snr_db(wav, plain).float().cpu()
            p = class_probabilities(scorer, feats).reshape(b, 2, nm, -1)
            sc = score(p_rep, p[:, 0].reshape(b * nm, -1), p[:, 1].reshape(b * nm, -1), flat_m, mask_scores)
            scores[dom] = {k: v.reshape(b, nm).cpu() for k, v in sc.items()}
            seconds[dom] = time.perf_counter() - t0
    return MaskScores(x_in, x_out, audio, scores, snr, seconds)
