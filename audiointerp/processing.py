"""Log-STFT and log-mel features in dB, and their inversion back to audio.

Layout everywhere: features ``[batch, 1, n_freq, n_frames]`` (frequency as rows, time as
columns), float32, in dB re. 1 (power). The power floor is 1e-10, i.e. -100 dB, and there is
no top_db clipping, so masking towards -100 dB means "silence".

Forward and inverse sit side by side:

* :func:`log_stft` / :func:`inverse_log_stft` -- |STFT|^2 in dB; inversion puts the original
  STFT phase back and runs the ISTFT with the exact original length (perfect reconstruction
  up to float error for a Hann window with hop <= n_fft/2).
* :func:`log_mel` / :func:`inverse_log_mel` -- mel power in dB; inversion first maps mel
  power to linear power with a non-negative least-squares pseudo-inverse of the mel
  filterbank (``scipy.optimize.nnls``), then proceeds as for the STFT with the original phase.
* Without phase, Griffin-Lim (torchaudio) estimates one.

Defaults follow the prior art: STFT model 16 kHz, n_fft 512, hop 256, Hann -> 257 x 313;
mel model 16 kHz, n_fft 512, hop 160, 64 mels (Slaney scale and norm, as librosa/PANNs),
50-8000 Hz -> 64 x 501 (PANNs' 16 kHz setting; Kong et al., "PANNs", IEEE/ACM TASLP 2020).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np
import torch
import torchaudio

from .errors import CheckpointError, ConfigError

FLOOR_DB = -100.0
AMIN = 1e-10  # power floor, = -100 dB


@dataclass(frozen=True)
class FeatureConfig:
    """What a classifier hears: the feature kind and its STFT / mel parameters.

    Attributes:
        kind: ``"stft"`` (log-power STFT) or ``"mel"`` (log-power mel).
        sample_rate: model rate in Hz.
        n_fft: FFT size in samples (Hann window of the same length).
        hop_length: hop in samples.
        n_mels: number of mel bands (``kind == "mel"`` only).
        f_min, f_max: mel band edges in Hz (``kind == "mel"`` only).
        duration: clip length in seconds.
    """

    kind: str = "mel"
    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 8000.0
    duration: float = 5.0

    def __post_init__(self):
        if self.kind not in ("stft", "mel"):
            raise ConfigError(f"feature kind must be 'stft' or 'mel', got {self.kind!r}")
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"feature parameter {name} must be > 0, got {getattr(self, name)!r}")
        if self.hop_length > self.n_fft:
            raise ConfigError(f"hop_length {self.hop_length} > n_fft {self.n_fft} cannot be inverted")
        if self.kind == "mel" and not (0 <= self.f_min < self.f_max <= self.sample_rate / 2):
            raise ConfigError(
                f"mel band edges must satisfy 0 <= f_min < f_max <= sample_rate/2, "
                f"got f_min={self.f_min}, f_max={self.f_max}, sample_rate={self.sample_rate}")

    @property
    def n_samples(self) -> int:
        """Clip length in samples."""
        return int(round(self.duration * self.sample_rate))

    @property
    def n_freq(self) -> int:
        """Number of feature rows: n_fft//2+1 for STFT, n_mels for mel."""
        return self.n_fft // 2 + 1 if self.kind == "stft" else self.n_mels

    @property
    def n_frames(self) -> int:
        """Number of frames of a clip (centred STFT): 1 + n_samples // hop_length."""
        return 1 + self.n_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int, int]:
        """Feature shape of one clip, ``(1, n_freq, n_frames)``."""
        return (1, self.n_freq, self.n_frames)

    def to_dict(self) -> dict:
        """Plain dict (for checkpoints and run.json)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`CheckpointError`."""
        known = {f.name for f in fields(cls)}
        extra = set(d) - known
        if extra:
            raise CheckpointError(f"unknown feature configuration keys {sorted(extra)}")
        return cls(**d)

    @classmethod
    def stft_default(cls) -> "FeatureConfig":
        """The STFT model's default: 16 kHz, n_fft 512, hop 256, Hann -> 257 x 313."""
        return cls(kind="stft", sample_rate=16000, n_fft=512, hop_length=256)

    @classmethod
    def mel_default(cls) -> "FeatureConfig":
        """The mel model's default: 16 kHz, n_fft 512, hop 160, 64 mels, 50-8000 Hz -> 64 x 501."""
        return cls(kind="mel")

    @classmethod
    def default(cls, kind: str) -> "FeatureConfig":
        """Default configuration of ``kind`` ('stft' or 'mel')."""
        if kind == "stft":
            return cls.stft_default()
        if kind == "mel":
            return cls.mel_default()
        raise ConfigError(f"feature kind must be 'stft' or 'mel', got {kind!r}")


@lru_cache(maxsize=8)
def _window(n_fft: int) -> torch.Tensor:
    return torch.hann_window(n_fft)


@lru_cache(maxsize=8)
def mel_filterbank(cfg: FeatureConfig) -> torch.Tensor:
    """Mel filterbank ``[n_fft//2+1, n_mels]`` (float32), Slaney mel scale and area norm,
    identical to ``librosa.filters.mel`` (torchaudio.functional.melscale_fbanks)."""
    return torchaudio.functional.melscale_fbanks(
        n_freqs=cfg.n_fft // 2 + 1, f_min=float(cfg.f_min), f_max=float(cfg.f_max),
        n_mels=cfg.n_mels, sample_rate=cfg.sample_rate, norm="slaney", mel_scale="slaney")


def to_feature_power(power: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Linear STFT power ``[..., n_fft//2+1, n_frames]`` on the feature grid ``[..., n_freq, n_frames]``:
    unchanged for ``stft``, through the mel filterbank for ``mel`` (power, not dB)."""
    if cfg.kind != "mel":
        return power
    return torch.matmul(mel_filterbank(cfg).T.to(power.device), power)


def _as_batch(waveform: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if waveform.dim() == 1:
        return waveform[None], True
    if waveform.dim() == 2:
        return waveform, False
    if waveform.dim() == 3 and waveform.shape[1] == 1:
        return waveform[:, 0], False
    raise ConfigError(f"waveform must be [n_samples], [batch, n_samples] or [batch, 1, n_samples], "
                      f"got shape {tuple(waveform.shape)}")


def stft(waveform: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Complex centred STFT ``[batch, n_fft//2+1, n_frames]`` of ``[batch, n_samples]``."""
    return torch.stft(waveform, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                      window=_window(cfg.n_fft).to(waveform.device), center=True,
                      pad_mode="reflect", return_complex=True)


def power_to_db(power: torch.Tensor) -> torch.Tensor:
    """10·log10(max(power, 1e-10)): dB with a -100 dB floor, no top_db clipping."""
    return 10.0 * torch.log10(power.clamp_min(AMIN))


def db_to_power(db: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`power_to_db` (10^(dB/10)); the floor maps back to 1e-10."""
    return torch.pow(10.0, db / 10.0)


def log_stft(waveform: torch.Tensor, cfg: FeatureConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-power STFT in dB and the STFT phase.

    Args:
        waveform: float32 ``[n_samples]``, ``[batch, n_samples]`` or ``[batch, 1, n_samples]``.
        cfg: feature configuration (default: :meth:`FeatureConfig.stft_default`).

    Returns:
        ``(spec_db, phase)``, both float32 ``[batch, 1, n_fft//2+1, n_frames]``; spec in dB
        (>= -100), phase in radians.
    """
    cfg = cfg or FeatureConfig.stft_default()
    wav, _ = _as_batch(waveform)
    spec = stft(wav, cfg)
    return power_to_db(spec.abs() ** 2)[:, None], torch.angle(spec)[:, None]


def inverse_log_stft(spec_db: torch.Tensor, phase: torch.Tensor | None, length: int,
                     cfg: FeatureConfig | None = None, n_iter: int = 32) -> torch.Tensor:
    """Audio from a log-power STFT (the inverse of :func:`log_stft`).

    Args:
        spec_db: ``[batch, 1, n_fft//2+1, n_frames]`` in dB.
        phase: ``[batch, 1, n_fft//2+1, n_frames]`` radians (the original STFT phase), or None
            to estimate it with Griffin-Lim (``n_iter`` iterations, torchaudio).
        length: number of output samples (the original length; nothing is dropped or padded).

    Returns:
        float32 waveform ``[batch, length]``.
    """
    cfg = cfg or FeatureConfig.stft_default()
    magnitude = db_to_power(spec_db[:, 0]).sqrt()
    return magnitude_to_audio(magnitude, None if phase is None else phase[:, 0], length, cfg, n_iter)


def magnitude_to_audio(magnitude: torch.Tensor, phase: torch.Tensor | None, length: int, cfg: FeatureConfig,
                       n_iter: int = 32) -> torch.Tensor:
    """Audio from STFT magnitudes: the clip's phase put back and an ISTFT of exactly ``length`` samples.

    Args:
        magnitude: linear magnitudes ``[batch, n_fft//2+1, n_frames]`` (float32, >= 0).
        phase: ``[batch, n_fft//2+1, n_frames]`` radians (broadcastable), or None to estimate one
            with Griffin-Lim (``n_iter`` iterations; torchaudio; Griffin & Lim, IEEE TASSP 1984).
        length: output samples (the original length: nothing is dropped or padded).
        cfg: the STFT (n_fft, hop, Hann window).

    Returns:
        float32 waveforms ``[batch, length]``.
    """
    window = _window(cfg.n_fft).to(magnitude.device)
    if phase is None:
        gl = torchaudio.transforms.GriffinLim(n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                              win_length=cfg.n_fft, power=1.0, n_iter=n_iter,
                                              length=length, rand_init=False).to(magnitude.device)
        return gl(magnitude)
    spec = torch.polar(magnitude, phase.expand_as(magnitude))
    return torch.istft(spec, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window=window,
                       center=True, length=length)


def log1p_stft(waveform: torch.Tensor, cfg: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``L = log(1 + |STFT|)`` and the complex STFT, at ``cfg``'s STFT (whatever ``cfg.kind``).

    The magnitude representation of the learned interpreters: L2I's NMF dictionary (Parekh et
    al., NeurIPS 2022) and PIQ's mask (Paissan et al., 2023) live on it.

    Args:
        waveform: float32 ``[n_samples]``, ``[batch, n_samples]`` or ``[batch, 1, n_samples]``.

    Returns:
        ``(L float32 [batch, n_fft//2+1, n_frames] >= 0 (natural log),
        spec complex64 [batch, n_fft//2+1, n_frames])``.

    Raises:
        ConfigError: a waveform of another shape (quoted).
    """
    wav, _ = _as_batch(waveform)
    spec = stft(wav, cfg)
    return torch.log1p(spec.abs()), spec


def inverse_log1p_stft(L: torch.Tensor, phase: torch.Tensor | None, length: int, cfg: FeatureConfig,
                       n_iter: int = 32) -> torch.Tensor:
    """Audio of a log1p magnitude (the inverse of :func:`log1p_stft`): ``ISTFT(expm1(L)·e^{iφ})``.

    A masked ``M ⊙ L`` gives the learned interpreters' listenable interpretation with the clip's
    own phase φ.

    Args:
        L: ``[batch, n_fft//2+1, n_frames]`` (>= 0); phase: radians, same shape, or None
            (Griffin-Lim); length: output samples.

    Returns:
        float32 ``[batch, length]``.
    """
    return magnitude_to_audio(torch.expm1(L), phase, length, cfg, n_iter)


def magnitude_to_features(magnitude: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """The classifier's features of STFT magnitudes, as :func:`features` computes them from audio.

    Args:
        magnitude: linear magnitudes ``[batch, n_fft//2+1, n_frames]``.

    Returns:
        float32 ``[batch, 1, n_freq, n_frames]`` in dB (floor -100 dB): ``10·log10(|·|²)`` for
        ``stft``, through the mel filterbank first for ``mel``.
    """
    return power_to_db(to_feature_power(magnitude.pow(2), cfg))[:, None]


def linear_to_feature_grid(a_lin: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Carry a map over linear STFT bins ``[..., n_fft//2+1, n_frames]`` to the feature grid
    ``[..., n_freq, n_frames]``.

    Identity for ``stft``; for ``mel``, each band takes the mean of its bins weighted by its
    filter (the filterbank's columns normalised to sum to 1), so a constant map stays constant
    and a map in [0, 1] stays in [0, 1].
    """
    if cfg.kind == "stft":
        return a_lin
    fb = mel_filterbank(cfg).to(a_lin.device)
    w = fb / fb.sum(0, keepdim=True).clamp_min(1e-12)  # [F_lin, n_mels]
    return torch.einsum("...ft,fm->...mt", a_lin, w)


def log_mel(waveform: torch.Tensor, cfg: FeatureConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-power mel spectrogram in dB and the phase of the underlying STFT.

    Args:
        waveform: float32 ``[n_samples]``, ``[batch, n_samples]`` or ``[batch, 1, n_samples]``.
        cfg: feature configuration (default: :meth:`FeatureConfig.mel_default`).

    Returns:
        ``(mel_db [batch, 1, n_mels, n_frames], phase [batch, 1, n_fft//2+1, n_frames])``.
    """
    cfg = cfg or FeatureConfig.mel_default()
    wav, _ = _as_batch(waveform)
    spec = stft(wav, cfg)
    mel_power = torch.matmul(mel_filterbank(cfg).T.to(spec.device), spec.abs() ** 2)
    return power_to_db(mel_power)[:, None], torch.angle(spec)[:, None]


def mel_to_linear_power(mel_power: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Non-negative least-squares inverse of the mel filterbank.

    Solves ``min_P ||M_fb^T P - mel_power||^2, P >= 0`` exactly, frame by frame, with
    ``scipy.optimize.nnls`` (Lawson-Hanson active set; the problem librosa's
    ``mel_to_stft`` solves approximately). Frames are deduplicated first (masked-out frames at
    the floor are all alike), so heavily masked inputs invert faster.

    Args:
        mel_power: ``[batch, n_mels, n_frames]`` mel power (linear, not dB).

    Returns:
        linear power ``[batch, n_fft//2+1, n_frames]`` float32, >= 0.
    """
    from scipy.optimize import nnls

    fb = mel_filterbank(cfg).T.numpy().astype(np.float64)  # [n_mels, n_freq]
    m = mel_power.detach().cpu().numpy().astype(np.float64)
    b, n_mels, n_frames = m.shape
    cols = m.transpose(0, 2, 1).reshape(-1, n_mels)
    uniq, inverse_idx = np.unique(cols, axis=0, return_inverse=True)
    sol = np.stack([nnls(fb, c)[0] for c in uniq])
    out = sol[inverse_idx.reshape(-1)].reshape(b, n_frames, -1).transpose(0, 2, 1)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(mel_power.device)


def inverse_log_mel(mel_db: torch.Tensor, phase: torch.Tensor | None, length: int,
                    cfg: FeatureConfig | None = None, n_iter: int = 32) -> torch.Tensor:
    """Audio from a log-mel spectrogram (the inverse of :func:`log_mel`).

    Mel power -> linear power by non-negative least squares (:func:`mel_to_linear_power`),
    then the original STFT phase and an ISTFT of exactly ``length`` samples; Griffin-Lim
    only when ``phase`` is None. The mel map is not injective (64 rows for 257 bins), so this
    is not a perfect inverse: re-analysed, a tone-plus-noise test signal comes back within
    about 3 dB on average (95% of bins within 7 dB, about -2 dB overall bias).

    Args:
        mel_db: ``[batch, 1, n_mels, n_frames]`` in dB.
        phase: ``[batch, 1, n_fft//2+1, n_frames]`` radians, or None.
        length: number of output samples.

    Returns:
        float32 waveform ``[batch, length]``.
    """
    cfg = cfg or FeatureConfig.mel_default()
    power = mel_to_linear_power(db_to_power(mel_db[:, 0]), cfg)
    return magnitude_to_audio(power.sqrt(), None if phase is None else phase[:, 0], length, cfg, n_iter)


def features(waveform: torch.Tensor, cfg: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch to :func:`log_stft` or :func:`log_mel` by ``cfg.kind``; returns (features, phase)."""
    return (log_stft if cfg.kind == "stft" else log_mel)(waveform, cfg)


def features_only(waveform: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Features ``[batch, 1, n_freq, n_frames]`` in dB without the phase (cheaper than
    :func:`features` when only the model's input is needed, e.g. re-analysing resynthesised audio)."""
    wav, _ = _as_batch(waveform)
    out = torch.empty(wav.shape[0], 1, cfg.n_freq, cfg.n_frames, dtype=torch.float32, device=wav.device)
    for s in range(0, wav.shape[0], _RESYNTH_CHUNK):  # small chunks stay in cache
        power = torch.view_as_real(stft(wav[s:s + _RESYNTH_CHUNK], cfg)).pow(2).sum(-1)
        out[s:s + _RESYNTH_CHUNK, 0] = power_to_db(to_feature_power(power, cfg))
    return out


def inverse(feats: torch.Tensor, phase: torch.Tensor | None, length: int, cfg: FeatureConfig,
            n_iter: int = 32) -> torch.Tensor:
    """Dispatch to :func:`inverse_log_stft` or :func:`inverse_log_mel`; returns ``[batch, length]``."""
    fn = inverse_log_stft if cfg.kind == "stft" else inverse_log_mel
    return fn(feats, phase, length, cfg, n_iter)


INVERSIONS = ("gain", "pinv")
_RESYNTH_CHUNK = 16


@lru_cache(maxsize=8)
def mel_to_linear_gain_matrix(cfg: FeatureConfig) -> torch.Tensor:
    """``[n_fft//2+1, n_mels]`` matrix carrying a per-band gain to per-bin gains.

    Row f holds the filterbank weights of bin f normalised to sum to 1 (the transpose of the
    filterbank, row-normalised: a pseudo-inverse that maps a constant band gain to the same
    constant bin gain exactly). Bins outside every band (below ``f_min``) take the gain of
    the nearest band.
    """
    fb = mel_filterbank(cfg).double()  # [n_freq, n_mels]
    s = fb.sum(1, keepdim=True)
    w = torch.where(s > 0, fb / s.clamp_min(1e-30), fb)
    covered = (s[:, 0] > 0).nonzero()[:, 0]
    for f in (s[:, 0] == 0).nonzero()[:, 0].tolist():  # nearest covered bin's weights
        w[f] = w[covered[(covered - f).abs().argmin()]]
    return w.float()


def resynthesise(x_masked: torch.Tensor, x: torch.Tensor, spec: torch.Tensor, length: int,
                 cfg: FeatureConfig, inversion: str = "gain") -> torch.Tensor:
    """Audio of masked features, with the clip's original STFT phase ("mask and reconstruct").

    ``inversion="gain"`` (default) turns the masking into a time-frequency gain on the
    clip's own STFT: the power ratio ``10^((x_masked - x)/10)`` per feature bin (for mel, carried
    to linear-frequency bins by :func:`mel_to_linear_gain_matrix`) scales ``|spec|^2`` and the
    ISTFT resynthesises it. An all-ones mask gives the clip back exactly (up to float error).
    ``inversion="pinv"`` inverts the masked features themselves (:func:`inverse`: for mel, the
    non-negative least-squares pseudo-inverse of the filterbank; about 0.15 s per clip) and
    puts the original phase back; it loses the fine spectral detail inside each mel band.

    Args:
        x_masked: masked features ``[..., 1, n_freq, n_frames]`` in dB (e.g. x_in / x_out of
            :func:`audiointerp.masks.apply_mask`, with any leading batch dims).
        x: the clip's unmasked features, broadcastable to ``x_masked`` (dB).
        spec: the clip's complex STFT ``[..., n_fft//2+1, n_frames]``, broadcastable likewise.
        length: output samples (the clip length).
        cfg: the feature configuration of ``x``.
        inversion: ``"gain"`` or ``"pinv"``.

    Returns:
        float32 waveforms ``[..., length]`` (leading dims of ``x_masked``), not normalised: a
        masked clip is as quiet as its kept part.

    Raises:
        ConfigError: unknown inversion, or shapes that do not match ``cfg`` (quoted).
    """
    if inversion not in INVERSIONS:
        raise ConfigError(f"unknown inversion {inversion!r}; valid: {', '.join(INVERSIONS)}")
    if x_masked.dim() < 3 or x_masked.shape[-3] != 1 or x_masked.shape[-2] != cfg.n_freq:
        raise ConfigError(f"masked features {tuple(x_masked.shape)} do not match the {cfg.kind} configuration "
                          f"(expected [..., 1, {cfg.n_freq}, n_frames])")
    lead = x_masked.shape[:-3]
    if len(lead) > 1:  # recurse over the first leading dim (views, no copies)
        x = x.expand(*lead, *x.shape[-3:])
        spec = spec.expand(*lead, *spec.shape[-2:])
        return torch.stack([resynthesise(x_masked[i], x[i], spec[i], length, cfg, inversion) for i in range(lead[0])])
    if not lead:
        return resynthesise(x_masked[None], x.reshape(1, *x.shape[-3:]), spec.reshape(1, *spec.shape[-2:]),
                            length, cfg, inversion)[0]
    n_lin, n_frames = cfg.n_fft // 2 + 1, x_masked.shape[-1]
    window = _window(cfg.n_fft).to(x_masked.device)
    out = torch.empty(lead[0], length, dtype=torch.float32, device=x_masked.device)
    # Chunks of a few items keep the complex temporaries in cache: 2-3x faster than one big batch.
    for s in range(0, lead[0], _RESYNTH_CHUNK):
        e = min(s + _RESYNTH_CHUNK, lead[0])
        xc = x if x.shape[0] == 1 else x[s:e]
        sc = spec if spec.shape[0] == 1 else spec[s:e]
        if inversion == "pinv":
            phase = torch.angle(sc).expand(e - s, n_lin, n_frames)[:, None]
            out[s:e] = inverse(x_masked[s:e], phase, length, cfg)
            continue
        gain = db_to_power((x_masked[s:e] - xc)[:, 0])  # power ratio [n, F, T]
        if cfg.kind == "mel":
            gain = torch.matmul(mel_to_linear_gain_matrix(cfg).to(gain.device), gain)
        amp = gain.clamp_min(0).sqrt()[..., None]
        masked = torch.view_as_complex(torch.view_as_real(sc) * amp)  # real x complex, broadcast
        out[s:e] = torch.istft(masked, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window=window, center=True,
                               length=length)
    return out


def reconstruction_snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Signal-to-reconstruction-error ratio 10·log10(Σ ref² / Σ (ref − est)²) in dB over the
    last axis (``[...]``, float64); +inf for a perfect reconstruction."""
    ref = reference.double()
    return 10.0 * torch.log10(ref.pow(2).sum(-1) / (ref - estimate.double()).pow(2).sum(-1))


class FeatureExtractor(torch.nn.Module):
    """Thin module around :func:`features` / :func:`inverse` for one :class:`FeatureConfig`.

    ``extractor(waveform)`` returns features ``[batch, 1, n_freq, n_frames]`` (dB);
    :meth:`transform` also returns the phase; :meth:`inverse` resynthesises audio.
    """

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Features ``[batch, 1, n_freq, n_frames]`` (dB) of ``[batch, n_samples]`` waveforms."""
        return features(waveform, self.cfg)[0]

    def transform(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [batch, 1, n_freq, n_frames], phase [batch, 1, n_fft//2+1, n_frames])``."""
        return features(waveform, self.cfg)

    def inverse(self, feats: torch.Tensor, phase: torch.Tensor | None = None,
                length: int | None = None) -> torch.Tensor:
        """Waveform ``[batch, length]`` (default length: the configured clip length)."""
        return inverse(feats, phase, length or self.cfg.n_samples, self.cfg)

    def extra_repr(self) -> str:
        """The configuration, for ``repr``."""
        return ", ".join(f"{k}={v}" for k, v in self.cfg.to_dict().items())
