"""Reading and writing audio files: the one place where audiointerp touches audio on disk.

Files are read and written with soundfile (libsndfile), which handles WAV and FLAC without
FFmpeg. Waveforms are float32 numpy arrays or torch tensors in [-1, 1].

Files that would give wrong numbers are refused with an :class:`~audiointerp.errors.AudioFileError`
naming the file, never decoded "as far as it goes": 0-byte, corrupt and truncated files,
files without samples or with NaN/infinite samples (:func:`read_audio`), and, for clips to
classify, silent ones (:func:`load_clip`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .errors import AudioFileError


def _wav_shortfall(path: Path) -> tuple[int, int] | None:
    """Compare a RIFF/WAVE file's announced sample data with what the file holds.

    libsndfile silently shortens a truncated WAV to the frames present (its ``frames`` then
    agrees with what it decodes), so the check reads the header itself: the size of the
    ``data`` chunk against the bytes after it, in frames of ``block_align`` bytes (``fmt``).

    Returns:
        ``(announced_frames, present_frames)`` when the data chunk is cut short; None when the
        file is complete, is not a RIFF/WAVE file (e.g. FLAC, RF64), or carries the streaming
        placeholder size 0 or 0xFFFFFFFF (length unknown to the writer).
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos, block_align = 12, 0
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            cid, n = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if cid == b"fmt ":
                fmt = f.read(16)
                block_align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else 0
            elif cid == b"data":
                if n in (0, 0xFFFFFFFF):
                    return None
                present = size - (pos + 8)
                if present >= n:
                    return None
                b = max(block_align, 1)
                return n // b, present // b
            pos += 8 + n + (n & 1)
    return None


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 samples, refusing files that would give wrong numbers.

    The file is decoded with soundfile (libsndfile). It is refused when it is missing, 0 bytes
    long, cannot be decoded (corrupt, or a FLAC cut short: libsndfile reports "lost sync"),
    is truncated (fewer frames decodable than its header announces: for WAV the ``data``
    chunk size, which libsndfile itself silently trims to what is present; for other formats
    the frame count libsndfile reports), holds no samples, or holds NaN/infinite samples
    (possible in float WAV files).

    Args:
        path: a WAV or FLAC file (anything libsndfile reads).

    Returns:
        ``(samples, sample_rate)`` with samples float32 ``[n_channels, n_samples]`` (in
        [-1, 1] for integer PCM; float files are returned as stored) and sample_rate in Hz.

    Raises:
        AudioFileError: each case above; the message names the file and, for NaN/Inf, counts them.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioFileError(f"audio file {path} is empty (0 bytes)")
    try:
        cut = _wav_shortfall(path)
    except OSError as exc:
        raise AudioFileError(f"cannot read audio file {path}: {exc}") from None
    if cut is not None:
        raise AudioFileError(f"audio file {path} is truncated: its header announces {cut[0]} frames but "
                             f"only {cut[1]} are present")
    try:
        with sf.SoundFile(str(path)) as f:
            announced, sr = f.frames, f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises LibsndfileError/RuntimeError for bad files
        raise AudioFileError(f"cannot decode audio file {path} (corrupt or truncated): {exc}") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"audio file {path} is empty (0 samples)")
    if data.shape[0] < announced:
        raise AudioFileError(f"audio file {path} is truncated: its header announces {announced} frames but "
                             f"only {data.shape[0]} could be decoded")
    bad = ~np.isfinite(data)
    if bad.any():
        n_nan = int(np.isnan(data).sum())
        raise AudioFileError(f"audio file {path} holds {n_nan} NaN and {int(bad.sum()) - n_nan} infinite samples "
                             f"(of {data.size}); refusing it rather than propagating them")
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
        path: audio file (any channel count and rate; see :func:`read_audio`).
        sample_rate: target rate in Hz.
        duration: target length in seconds (None keeps the length).
        normalise: divide by the absolute peak.

    Returns:
        float32 waveform ``[n_samples]`` with ``n_samples = round(duration * sample_rate)``.

    Raises:
        AudioFileError: every refusal of :func:`read_audio` (missing, empty, corrupt, truncated,
            NaN/Inf samples), and a silent clip (all samples zero: no sound to classify or
            explain, and peak normalisation cannot scale it); the message names the file.
    """
    samples, sr = read_audio(path)
    if not samples.any():
        raise AudioFileError(f"audio file {path} is silent (all {samples.shape[-1]} samples are zero)")
    wav = resample(to_mono(torch.from_numpy(samples)), sr, sample_rate)
    if normalise:
        wav = peak_normalise(wav)
    if duration is not None:
        wav = fix_length(wav, int(round(duration * sample_rate)))
    return wav.contiguous()


def write_audio(path: str | os.PathLike, waveform, sample_rate: int) -> Path:
    """Write a mono waveform ``[n_samples]`` (torch or numpy, float) as 16-bit PCM WAV/FLAC.

    Samples are clipped to [-1, 1]. The file carries ``sample_rate`` (Hz) as its true rate;
    the format follows the suffix (``.wav`` or ``.flac``).

    Returns:
        the path written (parent folders are created).

    Raises:
        AudioFileError: the waveform holds NaN or infinite samples (counted; nothing is written).
    """
    path = Path(path)
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
    bad = int((~np.isfinite(waveform)).sum())
    if bad:
        raise AudioFileError(f"refusing to write {path}: the waveform holds {bad} NaN/infinite samples "
                             f"(of {waveform.size})")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(waveform, -1.0, 1.0), int(sample_rate), subtype="PCM_16")
    return path
