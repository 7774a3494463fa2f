"""The NMF dictionary of L2I: non-negative spectral templates of log1p-magnitude STFT frames.

L2I (Parekh et al., "Listen to Interpret: Post-hoc Interpretability for Audio Networks with
NMF", NeurIPS 2022) explains a classifier through the activations H in R+^{K x T} of a fixed
dictionary W in R+^{F x K}, learned once by non-negative matrix factorisation of the
log1p-magnitude STFT frames of the training folds: L ~ W H with L = log(1 + |STFT|).

The dictionary is learned **at the classifier's own sample rate and STFT** (n_fft, hop; the
:class:`audiointerp.processing.FeatureConfig` of the checkpoint), and it refuses features of
any other configuration. The reference recipe learned it at 44.1 kHz and applied it at 16 kHz.
The factorisation is scikit-learn's ``NMF`` (Frobenius loss, coordinate descent, NNDSVDa
initialisation; Lee & Seung 2001, Cichocki & Phan 2009).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError, ConfigError
from .processing import FeatureConfig, log1p_stft

NMF_FORMAT = "audiointerp-nmf/1"


@dataclass
class NMFDictionary:
    """A learned NMF dictionary and the STFT it belongs to.

    Attributes:
        W: float32 ``[n_fft//2+1, K]``, non-negative spectral templates (columns).
        cfg: the feature configuration whose STFT (rate, n_fft, hop) the dictionary was learned on.
        info: provenance (frames used, seed, iterations, reconstruction error).
    """

    W: torch.Tensor
    cfg: FeatureConfig
    info: dict

    @property
    def n_components(self) -> int:
        """K, the number of templates (columns of W)."""
        return int(self.W.shape[1])

    def check(self, cfg: FeatureConfig) -> None:
        """Raise ConfigError when ``cfg``'s STFT differs from the dictionary's (values quoted)."""
        mine = (self.cfg.sample_rate, self.cfg.n_fft, self.cfg.hop_length)
        theirs = (cfg.sample_rate, cfg.n_fft, cfg.hop_length)
        if mine != theirs:
            raise ConfigError(f"NMF dictionary learned at (rate, n_fft, hop) = {mine} cannot explain features at "
                              f"{theirs}; learn a dictionary for this classifier")

    def activations(self, L: torch.Tensor, max_iter: int = 200) -> torch.Tensor:
        """Non-negative activations H with W fixed: ``argmin_H>=0 ||L - W H||_F``.

        Args:
            L: log1p magnitudes ``[batch, F, n_frames]`` or ``[F, n_frames]``.

        Returns:
            float32 ``[batch, K, n_frames]`` (or ``[K, n_frames]``), >= 0.
        """
        from sklearn.decomposition import non_negative_factorization

        single = L.dim() == 2
        L3 = L[None] if single else L
        if L3.shape[1] != self.W.shape[0]:
            raise ConfigError(f"log1p spectrogram has {L3.shape[1]} frequency bins, the dictionary {self.W.shape[0]}")
        X = L3.transpose(1, 2).reshape(-1, L3.shape[1]).double().numpy()  # frames as rows
        H, _, _ = non_negative_factorization(X, H=self.W.T.double().numpy(), n_components=self.n_components,
                                             init="custom", update_H=False, solver="cd", max_iter=max_iter)
        out = torch.from_numpy(H.astype(np.float32)).reshape(L3.shape[0], L3.shape[2], -1).transpose(1, 2)
        return out[0] if single else out.contiguous()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the dictionary with its feature configuration and provenance (torch.save)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": NMF_FORMAT, "W": self.W, "features": self.cfg.to_dict(), "info": self.info}, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NMFDictionary":
        """Read a dictionary written by :meth:`save`.

        Raises:
            CheckpointError: missing file, or not an audiointerp NMF dictionary (named).
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"NMF dictionary not found: {path}")
        try:
            d = torch.load(path, weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot read NMF dictionary {path}: {exc}") from None
        if not isinstance(d, dict) or d.get("format") != NMF_FORMAT:
            raise CheckpointError(f"{path} is not an audiointerp NMF dictionary (format {NMF_FORMAT})")
        return cls(d["W"], FeatureConfig.from_dict(d["features"]), d.get("info", {}))


def learn_dictionary(frames: torch.Tensor, cfg: FeatureConfig, n_components: int = 100, seed: int = 0,
                     max_iter: int = 400, tol: float = 1e-4) -> NMFDictionary:
    """Learn W by NMF of log1p-magnitude frames (scikit-learn ``NMF``, Frobenius loss).

    Args:
        frames: non-negative float ``[n_frames_total, n_fft//2+1]`` (frames as rows, e.g. from
            :func:`audiointerp.processing.log1p_stft` of training clips, transposed and stacked).
        cfg: the classifier's feature configuration (recorded; its STFT must match the frames).
        n_components: K (100 in L2I).
        seed: NNDSVDa is deterministic; the seed fixes the solver's randomness.

    Returns:
        :class:`NMFDictionary` with ``W [F, K]`` scaled so every column has unit max (the
        activations absorb the scale), and ``info`` holding the relative reconstruction error.

    Raises:
        ConfigError: negative values, a frame width that is not ``n_fft//2+1``, or K out of range.
    """
    from sklearn.decomposition import NMF

    X = frames.double().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != cfg.n_fft // 2 + 1:
        raise ConfigError(f"frames must be [n, {cfg.n_fft // 2 + 1}] for n_fft {cfg.n_fft}, got {X.shape}")
    if (X < 0).any():
        raise ConfigError("NMF needs non-negative frames (log1p magnitudes); got negative values")
    if not 1 <= n_components <= min(X.shape):
        raise ConfigError(f"n_components must be in [1, {min(X.shape)}], got {n_components}")
    model = NMF(n_components=n_components, init="nndsvda", solver="cd", beta_loss="frobenius", max_iter=max_iter,
                tol=tol, random_state=seed)
    model.fit(X)
    W = model.components_.T  # [F, K]
    scale = W.max(axis=0, keepdims=True)
    W = W / np.where(scale > 0, scale, 1.0)
    rel = float(model.reconstruction_err_ / max(np.linalg.norm(X), 1e-30))
    info = {"n_frames": int(X.shape[0]), "n_components": n_components, "seed": seed, "max_iter": max_iter,
            "n_iter": int(model.n_iter_), "relative_error": rel, "method": "sklearn NMF cd/frobenius/nndsvda"}
    return NMFDictionary(torch.from_numpy(W.astype(np.float32)), cfg, info)


def training_frames(waveforms: torch.Tensor, cfg: FeatureConfig, n_frames: int = 20000, seed: int = 0,
                    min_energy: float = 1e-3) -> torch.Tensor:
    """A seeded sample of non-silent log1p-magnitude frames of some clips.

    Args:
        waveforms: float32 ``[n_clips, n_samples]`` at ``cfg.sample_rate``.
        n_frames: frames to keep (all if fewer are available).
        min_energy: frames whose log1p magnitudes sum to less are dropped (padding, silence).

    Returns:
        float32 ``[n_frames, n_fft//2+1]`` (frames as rows).
    """
    L = log1p_stft(waveforms, cfg)[0]
    frames = L.transpose(1, 2).reshape(-1, L.shape[1])
    frames = frames[frames.sum(1) > min_energy]
    if len(frames) > n_frames:
        pick = np.random.default_rng(seed).choice(len(frames), n_frames, replace=False)
        frames = frames[torch.from_numpy(np.sort(pick))]
    return frames.contiguous()


def dictionary_card(d: NMFDictionary, checkpoint: str, minutes: float) -> str:
    """A Markdown card for a learned dictionary (what, on which STFT, how well it fits)."""
    i = d.info
    return "\n".join([
        f"# NMF dictionary for `{checkpoint}`", "",
        "L2I's dictionary (Parekh et al., NeurIPS 2022): K non-negative spectral templates W [F, K] of",
        "log(1 + |STFT|) frames, learned by scikit-learn NMF (Frobenius loss, coordinate descent, NNDSVDa).", "",
        "| | |", "|---|---|",
        f"| STFT | {d.cfg.sample_rate} Hz, n_fft {d.cfg.n_fft}, hop {d.cfg.hop_length} (the classifier's own) |",
        f"| K | {d.n_components} |",
        f"| frames | {i.get('n_frames')} non-silent frames of {i.get('n_clips', '?')} training clips (folds 1-3), seed {i.get('seed')} |",
        f"| iterations | {i.get('n_iter')} of {i.get('max_iter')} |",
        f"| relative reconstruction error ‖X − WH‖/‖X‖ | {i.get('relative_error', float('nan')):.4f} |",
        f"| time | {minutes:.1f} min on this machine |", ""])
