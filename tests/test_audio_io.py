"""Bad audio is refused by name (audiointerp.audio_io): NaN/Inf samples, empty, silent and
truncated files. Each case is written here with soundfile, seeded and tiny."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf
import torch

from audiointerp.audio_io import load_clip, read_audio, write_audio
from audiointerp.errors import AudioFileError

SR = 16000


def tone(n: int = 1600, sr: int = SR, freq: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


def refused(path, words, fn=read_audio):
    with pytest.raises(AudioFileError) as err:
        fn(path) if fn is read_audio else fn(path, SR)
    msg = str(err.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


@pytest.mark.parametrize("bad, words", [({3: np.nan}, ["1 NaN and 0 infinite"]),
                                        ({3: np.inf}, ["0 NaN and 1 infinite"]),
                                        ({3: np.nan, 4: np.nan, 9: -np.inf, 10: np.inf}, ["2 NaN and 2 infinite",
                                                                                           "of 1600"])])
def test_non_finite_samples_are_refused_and_counted(tmp_path, bad, words):
    x = tone()
    for i, v in bad.items():
        x[i] = v
    path = tmp_path / "float-clip.wav"
    sf.write(str(path), x, SR, subtype="FLOAT")
    assert not np.isfinite(sf.read(str(path))[0]).all()  # libsndfile itself passes them through
    refused(path, words)
    refused(path, words, fn=load_clip)


def test_stereo_nan_counted_over_all_channels(tmp_path):
    x = np.stack([tone(), tone()], axis=1)
    x[0, 1] = np.nan
    path = tmp_path / "stereo-nan.wav"
    sf.write(str(path), x, SR, subtype="DOUBLE")
    refused(path, ["1 NaN", "of 3200"])


def test_silent_clip_is_refused_by_load_clip_only(tmp_path):
    path = write_audio(tmp_path / "silent-clip.flac", np.zeros(800, dtype=np.float32), SR)
    samples, sr = read_audio(path)  # reading is fine (a silent noise file gets its own error)
    assert samples.shape == (1, 800) and not samples.any()
    refused(path, ["silent", "800 samples"], fn=load_clip)
    almost = np.zeros(800, dtype=np.float32)
    almost[400] = 1e-3
    assert float(load_clip(write_audio(tmp_path / "one-click.flac", almost, SR), SR).abs().max()) == 1.0


def test_zero_byte_and_header_only_files_are_refused(tmp_path):
    empty = tmp_path / "zero-bytes.wav"
    empty.write_bytes(b"")
    refused(empty, ["empty (0 bytes)"])
    refused(empty, ["empty"], fn=load_clip)
    header = tmp_path / "header-only.wav"  # (an empty FLAC is written as 0 bytes)
    sf.write(str(header), np.zeros(0, dtype=np.float32), SR)
    refused(header, ["empty (0 samples)"])


@pytest.mark.parametrize("subtype, channels", [("PCM_16", 1), ("PCM_24", 2), ("FLOAT", 1)])
@pytest.mark.parametrize("keep", [0.5, 0.99, 44 / 3244])
def test_truncated_wav_is_refused(tmp_path, subtype, channels, keep):
    """libsndfile silently trims a truncated WAV to the frames present (no error, fewer
    frames): the data chunk size in the header says how many there should be."""
    x = np.stack([tone()] * channels, axis=1)
    full = tmp_path / "full.wav"
    sf.write(str(full), x, SR, subtype=subtype)
    raw = full.read_bytes()
    path = tmp_path / "cut-clip.wav"
    path.write_bytes(raw[:max(44, int(len(raw) * keep))])
    assert sf.info(str(path)).frames < 1600  # what libsndfile alone would give: a shorter clip
    msg = refused(path, ["truncated", "announces 1600 frames"])
    refused(path, ["truncated"], fn=load_clip)
    assert "only" in msg


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_flac_is_refused(tmp_path, keep):
    """libsndfile reports the full frame count of a cut FLAC (from STREAMINFO) and fails to
    decode it ("lost sync" or a failed seek)."""
    x = 0.3 * np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    full = tmp_path / "full.flac"
    sf.write(str(full), x, SR, subtype="PCM_16")
    raw = full.read_bytes()
    path = tmp_path / "cut-clip.flac"
    path.write_bytes(raw[:int(len(raw) * keep)])
    refused(path, ["cut-clip.flac"])
    with pytest.raises(AudioFileError, match="corrupt or truncated|truncated"):
        read_audio(path)


def test_streaming_wav_placeholder_size_is_read(tmp_path):
    """A WAV written to a pipe carries 0xFFFFFFFF as data size: not a truncation."""
    path = tmp_path / "stream.wav"
    sf.write(str(path), tone(), SR, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    i = raw.index(b"data")
    raw[i + 4:i + 8] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(raw))
    samples, sr = read_audio(path)
    assert samples.shape == (1, 1600) and sr == SR


def test_complete_files_with_trailing_chunks_pass(tmp_path):
    """A WAV with a chunk after ``data`` (e.g. LIST metadata) is complete."""
    path = tmp_path / "tagged.wav"
    sf.write(str(path), tone(), SR, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    raw += b"LIST" + struct.pack("<I", 4) + b"INFO"
    raw[4:8] = struct.pack("<I", len(raw) - 8)
    path.write_bytes(bytes(raw))
    assert read_audio(path)[0].shape == (1, 1600)


def test_write_audio_refuses_non_finite(tmp_path):
    x = torch.from_numpy(tone())
    x[7] = float("nan")
    path = tmp_path / "out.wav"
    with pytest.raises(AudioFileError, match="out.wav.*1 NaN/infinite"):
        write_audio(path, x, SR)
    assert not path.exists()
