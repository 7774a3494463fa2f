"""Reading and writing audio files: the one place where audiointerp touches audio on disk.

Files are read and written with soundfile (libsndfile), which handles WAV and FLAC without
FFmpeg. Waveforms are float32 numpy arrays or torch tensors in [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .errors import AudioFileError


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 samples.

    Args:
        path: a WAV or FLAC file (anything libsndfile reads).

    Returns:
        ``(samples, sample_rate)`` with samples float32 ``[n_channels, n_samples]`` in
        [-1, 1] and sample_rate in Hz.

    Raises:
        AudioFileError: the file is missing, cannot be decoded (corrupt), or holds no samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises LibsndfileError/RuntimeError for bad files
        raise AudioFileError(f"cannot decode audio file {path}: {exc}") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"audio file {path} is empty (0 samples)")
    return np.ascontiguousarray(data.T), int(sr)


def to_mono(samples: torch.Tensor) -> torch.Tensor:
    """Downmix ``[n_channels, n_samples]`` to ``[n_samples]`` by averaging the channels."""
    return samples.mean(dim=0) if samples.dim() == 2 else samples


def resample(waveform: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample ``[..., n_samples]`` from ``orig_sr`` to ``new_sr`` Hz (torchaudio's
    band-limited sinc interpolation); returns the input unchanged when the rates agree."""
    if int(orig_sr) == int(new_sr):
        return waveform
    return AF.resample(waveform, int(orig_sr), int(new_sr))


def peak_normalise(waveform: torch.Tensor) -> torch.Tensor:
    """Divide ``[..., n_samples]`` by its absolute maximum over the last axis.

    A silent (all-zero) signal stays zeros; there is no division by zero.
    """
    peak = waveform.abs().amax(dim=-1, keepdim=True)
    return torch.where(peak > 0, waveform / peak.clamp_min(torch.finfo(waveform.dtype).tiny), waveform)


def fix_length(waveform: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Zero-pad at the end or cut ``[..., n]`` to exactly ``[..., n_samples]``."""
    n = waveform.shape[-1]
    if n >= n_samples:
        return waveform[..., :n_samples]
    return torch.nn.functional.pad(waveform, (0, n_samples - n))


def load_clip(path: str | os.PathLike, sample_rate: int, duration: float | None = 5.0,
              normalise: bool = True) -> torch.Tensor:
    """Read a clip, downmix to mono, resample, peak-normalise and pad/cut it.

    Args:
        path: audio file (any channel count and rate).
        sample_rate: target rate in Hz.
        duration: target length in seconds (None keeps the length).
        normalise: divide by the absolute peak (silent clips stay zeros).

    Returns:
        float32 waveform ``[n_samples]`` with ``n_samples = round(duration * sample_rate)``.

    Raises:
        AudioFileError: missing, corrupt or empty file (the message names it).
    """
    samples, sr = read_audio(path)
    wav = resample(to_mono(torch.from_numpy(samples)), sr, sample_rate)
    if normalise:
        wav = peak_normalise(wav)
    if duration is not None:
        wav = fix_length(wav, int(round(duration * sample_rate)))
    return wav.contiguous()


def write_audio(path: str | os.PathLike, waveform, sample_rate: int) -> Path:
    """Write a mono waveform ``[n_samples]`` (torch or numpy, float) as 16-bit PCM WAV/FLAC.

    Samples are clipped to [-1, 1]. The file carries ``sample_rate`` (Hz) as its true rate.
    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    waveform = np.clip(np.asarray(waveform, dtype=np.float32).reshape(-1), -1.0, 1.0)
    sf.write(str(path), waveform, int(sample_rate), subtype="PCM_16")
    return path
