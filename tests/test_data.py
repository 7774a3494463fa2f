"""Tests of audiointerp.audio_io and audiointerp.data on seeded synthetic audio.

Everything runs offline on tiny datasets built in ``tmp_path``: sines and white noise written
with soundfile, an ESC-50-shaped folder (official csv columns, ``.wav`` names in the csv even
where the file is ``.flac``), and a zip archive served through a ``file://`` URL.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiointerp import data, processing
from audiointerp.audio_io import fix_length, load_clip, peak_normalise, read_audio, write_audio
from audiointerp.data import ESC50, download_esc50, esc50_root, fold_features, verify_esc50
from audiointerp.errors import AudioFileError, ConfigError, DatasetError
from audiointerp.processing import FeatureConfig

QUANT = 1.0 / 32768  # one 16-bit PCM step
CSV_COLUMNS = "filename,fold,target,category,esc10,src_file,take"


def sine(freq: float, sr: int, seconds: float, amp: float = 0.5, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def noise(seed: int, n: int, amp: float = 0.3) -> np.ndarray:
    return (amp * np.random.default_rng(seed).uniform(-1, 1, n)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# A tiny ESC-50: 2 classes x 5 folds x 1 clip. Target 0 is "rooster", target 1 is "dog", so
# alphabetical order differs from target order, and the csv lists target 1 first.

CLASSES = {0: "rooster", 1: "dog"}
CLIP_SECONDS = 0.25


def clip_name(fold: int, target: int) -> str:
    return f"{fold}-{100030 + 10 * fold + target}-A-{target}.wav"


def clip_rows() -> list[dict]:
    rows = []
    for target in (1, 0):
        for fold in range(1, 6):
            rows.append(dict(filename=clip_name(fold, target), fold=fold, target=target,
                             category=CLASSES[target], esc10=False,
                             src_file=100030 + 10 * fold + target, take="A"))
    return rows


def clip_signal(fold: int, target: int, sr: int) -> np.ndarray:
    """Class 0: a sine whose frequency depends on the fold; class 1: seeded white noise."""
    n = int(round(sr * CLIP_SECONDS))
    if target == 0:
        return sine(300.0 + 100.0 * fold, sr, CLIP_SECONDS, amp=0.4)
    return noise(10 * fold + target, n)


def write_csv(root: Path, rows: list[dict]) -> Path:
    path = root / "meta" / "esc50.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [CSV_COLUMNS] + [
        f"{r['filename']},{r['fold']},{r['target']},{r['category']},{r['esc10']},{r['src_file']},{r['take']}"
        for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_esc50(root: Path, skip: tuple[str, ...] = ()) -> Path:
    """Write the tiny dataset: odd folds as 44.1 kHz stereo .wav, even folds as 16 kHz mono
    .flac (the csv still says .wav). Clips named in ``skip`` get no audio file."""
    rows = clip_rows()
    write_csv(root, rows)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for r in rows:
        if r["filename"] in skip:
            continue
        fold, target = r["fold"], r["target"]
        stem = Path(r["filename"]).stem
        if fold % 2 == 1:
            x = clip_signal(fold, target, 44100)
            stereo = np.stack([x, 0.5 * x], axis=1)  # both channels carry the clip
            sf.write(str(root / "audio" / f"{stem}.wav"), stereo, 44100, subtype="PCM_16")
        else:
            write_audio(root / "audio" / f"{stem}.flac", clip_signal(fold, target, 16000), 16000)
    return root


@pytest.fixture
def esc_root(tmp_path) -> Path:
    return make_esc50(tmp_path / "ESC-50")


# ---------------------------------------------------------------------------------------------
# audio_io

@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_write_read_round_trip(tmp_path, suffix):
    x = sine(440.0, 16000, 0.5, amp=0.8)
    path = write_audio(tmp_path / f"tone{suffix}", torch.from_numpy(x), 16000)
    assert path == tmp_path / f"tone{suffix}" and path.is_file()
    samples, sr = read_audio(path)
    assert sr == 16000
    assert samples.dtype == np.float32
    assert samples.shape == (1, x.size)
    np.testing.assert_allclose(samples[0], x, atol=1e-4)
    assert np.abs(samples[0] - x).max() <= QUANT  # within one 16-bit step


def test_write_audio_keeps_sample_rate_and_clips(tmp_path):
    x = np.array([0.0, 0.5, 2.0, -3.0, -0.25], dtype=np.float32)
    path = write_audio(tmp_path / "sub" / "a.wav", x, 22050)
    info = sf.info(str(path))
    assert info.samplerate == 22050
    assert info.channels == 1
    assert info.subtype == "PCM_16"
    samples, sr = read_audio(path)
    assert sr == 22050
    # out-of-range samples are clipped to [-1, 1] (+1 is stored as the largest 16-bit value)
    np.testing.assert_allclose(samples[0], [0.0, 0.5, 1.0, -1.0, -0.25], atol=QUANT)


def test_load_clip_downmixes_stereo_to_mean(tmp_path):
    left = sine(500.0, 16000, 0.25, amp=0.6)
    right = noise(1, left.size, amp=0.4)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    samples, sr = read_audio(path)
    assert samples.shape == (2, left.size) and sr == 16000
    mono = load_clip(path, 16000, duration=None, normalise=False)
    assert mono.shape == (left.size,)
    assert mono.dtype == torch.float32
    np.testing.assert_allclose(mono.numpy(), (left + right) / 2, atol=1e-4)
    np.testing.assert_allclose(mono.numpy(), samples.mean(axis=0), atol=1e-7)


def test_load_clip_resamples_44k_to_16k(tmp_path):
    path = write_audio(tmp_path / "tone44k.wav", sine(1000.0, 44100, 1.0, amp=0.5), 44100)
    assert sf.info(str(path)).samplerate == 44100
    wav = load_clip(path, 16000, duration=1.0)
    assert wav.shape == (16000,)
    # without padding/cutting the resampled length is also exactly duration * 16000
    assert load_clip(path, 16000, duration=None).shape == (16000,)
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    freqs = np.fft.rfftfreq(16000, d=1 / 16000)
    assert freqs[np.argmax(spectrum)] == pytest.approx(1000.0)
    assert float(wav.abs().max()) == pytest.approx(1.0)


def test_peak_normalise():
    x = torch.from_numpy(sine(300.0, 8000, 0.1, amp=0.2)) - 0.05
    y = peak_normalise(x)
    assert float(y.abs().max()) == pytest.approx(1.0, abs=1e-7)
    torch.testing.assert_close(y, x / x.abs().max())
    # batch: each row by its own peak
    batch = torch.stack([x, 3 * x])
    yb = peak_normalise(batch)
    torch.testing.assert_close(yb.abs().amax(dim=-1), torch.ones(2))
    torch.testing.assert_close(yb[0], yb[1])


def test_peak_normalise_silence_stays_zero():
    silent = torch.zeros(1000)
    y = peak_normalise(silent)
    assert not torch.isnan(y).any()
    assert torch.equal(y, torch.zeros(1000))
    both = peak_normalise(torch.stack([torch.zeros(4), torch.tensor([0.0, -2.0, 1.0, 0.5])]))
    assert torch.equal(both, torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.5, 0.25]]))


def test_fix_length_pads_and_cuts():
    x = torch.arange(1.0, 6.0)
    assert torch.equal(fix_length(x, 8), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0, 0.0]))
    assert torch.equal(fix_length(x, 3), torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(fix_length(x, 5), x)
    batch = torch.ones(2, 3)
    assert torch.equal(fix_length(batch, 4), torch.tensor([[1.0, 1.0, 1.0, 0.0]] * 2))


def test_load_clip_pads_two_seconds_to_five(tmp_path):
    x = sine(700.0, 16000, 2.0, amp=0.25)
    path = write_audio(tmp_path / "short.flac", x, 16000)
    wav = load_clip(path, 16000)
    assert wav.shape == (80000,)
    assert wav.dtype == torch.float32
    assert torch.equal(wav[32000:], torch.zeros(48000))
    assert float(wav.abs().max()) == pytest.approx(1.0)
    np.testing.assert_allclose(wav[:32000].numpy(), x / np.abs(x).max(), atol=1e-3)


def test_load_clip_cuts_long_clip(tmp_path):
    path = write_audio(tmp_path / "long.wav", noise(3, 16000 * 6), 16000)
    assert load_clip(path, 16000).shape == (80000,)


# ---------------------------------------------------------------------------------------------
# Audio errors: each message names the file.

def test_read_audio_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "missing-clip.wav"
    with pytest.raises(AudioFileError) as err:
        read_audio(path)
    assert str(path) in str(err.value)
    assert "missing-clip.wav" in str(err.value)
    with pytest.raises(AudioFileError, match="missing-clip.wav"):
        load_clip(path, 16000)


def test_read_audio_corrupt_file(tmp_path):
    path = tmp_path / "corrupt-clip.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AudioFileError) as err:
        read_audio(path)
    assert "corrupt-clip.wav" in str(err.value)
    assert "cannot decode" in str(err.value)
    assert isinstance(err.value, ValueError)  # AudioFileError is also a ValueError


def test_read_audio_empty_file(tmp_path):
    path = tmp_path / "empty-clip.wav"
    sf.write(str(path), np.zeros(0, dtype=np.float32), 16000)
    assert path.is_file()
    with pytest.raises(AudioFileError) as err:
        read_audio(path)
    assert "empty" in str(err.value)
    assert "empty-clip.wav" in str(err.value)


# ---------------------------------------------------------------------------------------------
# ESC50 on the tiny dataset

def test_esc50_lengths_per_folds(esc_root):
    assert len(ESC50(esc_root)) == 10
    assert len(ESC50(esc_root, folds=data.TRAIN_FOLDS)) == 6
    assert len(ESC50(esc_root, folds=data.VAL_FOLDS)) == 2
    assert len(ESC50(esc_root, folds=data.TEST_FOLDS)) == 2
    assert len(ESC50(esc_root, folds=[2, 5])) == 4


def test_esc50_items_labels_names(esc_root):
    ds = ESC50(esc_root, folds=(1, 2))
    assert ds.sample_rate == 16000 and ds.duration == 5.0
    assert ds.folds == (1, 2)
    # csv order, restricted to the folds: target 1 (dog) rows come first
    assert ds.filenames == [clip_name(1, 1), clip_name(2, 1), clip_name(1, 0), clip_name(2, 0)]
    assert all(f.endswith(".wav") for f in ds.filenames)
    assert ds.labels.dtype == np.int64
    assert ds.labels.tolist() == [1, 1, 0, 0]
    # class names are indexed by target, not sorted by name or csv order
    assert ds.class_names == ["rooster", "dog"]
    # fold 2 is stored as .flac although the csv says .wav
    assert ds.path(1).suffix == ".flac" and ds.path(0).suffix == ".wav"
    for i in range(len(ds)):
        wav, label = ds[i]
        assert wav.shape == (80000,)
        assert wav.dtype == torch.float32
        assert label == ds.labels[i]
        assert float(wav.abs().max()) == pytest.approx(1.0)
        n = int(round(CLIP_SECONDS * 16000))
        assert torch.equal(wav[n + 64:], torch.zeros(80000 - n - 64))  # zero-padded tail
    assert ds.waveforms().shape == (4, 80000)
    assert ds.waveforms([3, 0]).shape == (2, 80000)


def test_esc50_waveform_content(esc_root):
    ds = ESC50(esc_root, folds=(1, 2))
    # fold 2, class 0: a 16 kHz 500 Hz sine, peak-normalised
    x = clip_signal(2, 0, 16000)
    wav = ds.waveform(3)
    np.testing.assert_allclose(wav[:x.size].numpy(), x / np.abs(x).max(), atol=1e-3)
    # fold 1, class 0: 44.1 kHz stereo 400 Hz sine -> 16 kHz mono; spectral peak at 400 Hz
    wav = ds.waveform(2)[:4000].numpy()
    freqs = np.fft.rfftfreq(4000, d=1 / 16000)
    assert freqs[np.argmax(np.abs(np.fft.rfft(wav)))] == pytest.approx(400.0)


def test_esc50_waveform_is_cached(esc_root, monkeypatch):
    ds = ESC50(esc_root, folds=(1,))
    first = ds.waveform(0)
    calls = []
    monkeypatch.setattr(data, "load_clip", lambda *a, **k: calls.append(a) or torch.zeros(80000))
    second = ds.waveform(0)
    assert second is first
    assert calls == []  # served from memory, not re-read
    ds.waveform(1)  # an uncached clip does go through load_clip
    assert len(calls) == 1


def test_esc50_other_rate_and_duration(esc_root):
    ds = ESC50(esc_root, folds=(4,), sample_rate=8000, duration=1.0)
    assert ds.waveform(0).shape == (8000,)


@pytest.mark.parametrize("folds", [(6,), (0, 1)])
def test_esc50_bad_folds(esc_root, folds):
    with pytest.raises(DatasetError, match="folds are 1-5"):
        ESC50(esc_root, folds=folds)


# ---------------------------------------------------------------------------------------------
# esc50_root and missing clips

def test_esc50_root_unset(monkeypatch):
    monkeypatch.delenv("ESC50_ROOT", raising=False)
    with pytest.raises(DatasetError, match="ESC50_ROOT"):
        esc50_root()
    with pytest.raises(DatasetError, match="ESC50_ROOT"):
        ESC50()


def test_esc50_root_from_env(esc_root, monkeypatch):
    monkeypatch.setenv("ESC50_ROOT", str(esc_root))
    assert esc50_root() == esc_root
    assert len(ESC50(folds=(3,))) == 2


def test_esc50_root_without_csv(tmp_path, monkeypatch):
    folder = tmp_path / "not-esc50"
    (folder / "audio").mkdir(parents=True)
    with pytest.raises(DatasetError) as err:
        esc50_root(folder)
    assert str(folder) in str(err.value) and "meta/esc50.csv" in str(err.value)
    monkeypatch.setenv("ESC50_ROOT", str(folder))
    with pytest.raises(DatasetError, match="not-esc50"):
        ESC50()


def test_esc50_root_without_audio(tmp_path):
    folder = tmp_path / "meta-only"
    write_csv(folder, clip_rows())
    with pytest.raises(DatasetError, match="audio/"):
        esc50_root(folder)


def test_missing_clip_is_named(tmp_path):
    gone = clip_name(3, 0)
    root = make_esc50(tmp_path / "ESC-50", skip=(gone,))
    ds = ESC50(root, folds=(3,))  # construction does not read audio
    assert ds.filenames == [clip_name(3, 1), gone]
    assert ds.waveform(0).shape == (80000,)
    with pytest.raises(DatasetError) as err:
        ds.waveform(1)
    assert gone in str(err.value)
    with pytest.raises(DatasetError, match=Path(gone).stem):
        ds[1]


def test_corrupt_clip_in_dataset_is_named(esc_root):
    bad = esc_root / "audio" / (Path(clip_name(4, 1)).stem + ".flac")
    bad.write_bytes(b"not audio at all" * 64)
    ds = ESC50(esc_root, folds=(4,))
    with pytest.raises(AudioFileError, match=bad.name):
        ds.waveform(0)


# ---------------------------------------------------------------------------------------------
# fold_features and its on-disk cache

def test_fold_features_cache(esc_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(cache))
    assert data.cache_dir() == cache
    cfg = FeatureConfig.mel_default()
    ds = ESC50(esc_root, folds=(1,))
    feats = fold_features(ds, cfg, batch_size=1)
    assert feats.shape == (2, 1, 64, 501)
    assert feats.dtype == torch.float32
    assert float(feats.min()) >= processing.FLOOR_DB
    torch.testing.assert_close(feats, processing.features(ds.waveforms(), cfg)[0])
    files = list(cache.glob("features-mel-*.pt"))
    assert len(files) == 1
    assert not list(cache.glob("*.tmp"))

    def boom(*args, **kwargs):
        raise AssertionError("features recomputed instead of read from the cache")

    monkeypatch.setattr(processing, "features", boom)
    again = fold_features(ESC50(esc_root, folds=(1,)), cfg)
    assert torch.equal(again, feats)
    # the patch is effective: without the cache the features are recomputed (and fail)
    with pytest.raises(AssertionError, match="recomputed"):
        fold_features(ds, cfg, cache=False)


def test_fold_features_cache_key_depends_on_config_and_files(esc_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(cache))
    mel = fold_features(ESC50(esc_root, folds=(5,)), FeatureConfig.mel_default())
    stft = fold_features(ESC50(esc_root, folds=(5,)), FeatureConfig.stft_default())
    assert stft.shape == (2, 1, 257, 313)
    other = fold_features(ESC50(esc_root, folds=(4,)), FeatureConfig.mel_default())
    assert not torch.equal(mel, other)
    assert len(list(cache.glob("features-mel-*.pt"))) == 2
    assert len(list(cache.glob("features-stft-*.pt"))) == 1


def test_fold_features_recovers_from_corrupt_cache(esc_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(cache))
    cfg = FeatureConfig.mel_default()
    ds = ESC50(esc_root, folds=(2,))
    feats = fold_features(ds, cfg)
    (path,) = cache.glob("features-mel-*.pt")
    path.write_bytes(b"garbage")
    again = fold_features(ds, cfg)
    assert torch.equal(again, feats)
    entry = torch.load(path, weights_only=True)  # rewritten, with the clips it was made from
    assert torch.equal(entry["features"], feats)
    assert entry["filenames"] == ds.filenames and entry["digests"] == ds.digests


# ---------------------------------------------------------------------------------------------
# download_esc50 / verify_esc50 offline (file:// archives)

def make_archive(tmp_path: Path, skip: tuple[str, ...] = (), top: str = "ESC-50-master",
                 with_csv: bool = True) -> Path:
    src = make_esc50(tmp_path / "src" / top, skip=skip)
    if not with_csv:
        (src / "meta" / "esc50.csv").unlink()
    archive = tmp_path / "esc50-master.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src.parent).as_posix())
    return archive


def test_download_esc50_from_file_url(tmp_path, monkeypatch):
    n_rows = len(clip_rows())
    monkeypatch.setattr(data, "N_CLIPS", n_rows)
    archive = make_archive(tmp_path)
    dest = tmp_path / "data"
    root = download_esc50(dest, url=archive.as_uri())
    assert root == dest / "ESC-50"
    assert (root / "meta" / "esc50.csv").is_file()
    assert len(list((root / "audio").iterdir())) == n_rows
    assert sorted(p.name for p in dest.iterdir()) == ["ESC-50"]  # no temporary leftovers
    assert verify_esc50(root) == n_rows
    ds = ESC50(root, folds=(2,))
    assert len(ds) == 2 and ds.waveform(0).shape == (80000,)
    # a complete copy is kept: no download is attempted
    again = download_esc50(dest, url=(tmp_path / "no-such-archive.zip").as_uri())
    assert again == root
    again = download_esc50(dest, url="http://invalid.invalid/esc50.zip")
    assert again == root


def test_download_esc50_not_a_zip(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"<html>not a zip</html>")
    dest = tmp_path / "data"
    with pytest.raises(DatasetError, match="not a zip archive"):
        download_esc50(dest, url=fake.as_uri())
    assert not (dest / "ESC-50").exists()
    assert list(dest.iterdir()) == []  # temporary folder removed


def test_download_esc50_unreachable(tmp_path):
    url = (tmp_path / "missing.zip").as_uri()
    with pytest.raises(DatasetError) as err:
        download_esc50(tmp_path / "data", url=url)
    assert "could not download" in str(err.value) and url in str(err.value)


def test_download_esc50_archive_without_csv(tmp_path):
    archive = make_archive(tmp_path, with_csv=False)
    with pytest.raises(DatasetError, match="meta/esc50.csv"):
        download_esc50(tmp_path / "data", url=archive.as_uri())
    assert not (tmp_path / "data" / "ESC-50").exists()


def test_download_esc50_missing_clip_fails_verification(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "N_CLIPS", len(clip_rows()))
    gone = clip_name(5, 1)
    archive = make_archive(tmp_path, skip=(gone,))
    with pytest.raises(DatasetError) as err:
        download_esc50(tmp_path / "data", url=archive.as_uri())
    msg = str(err.value)
    assert "1 clips" in msg and "missing" in msg
    assert gone in msg
    # verification happens before the copy is moved into place: nothing is left behind, so the
    # next call downloads afresh instead of finding a broken copy
    assert not (tmp_path / "data" / "ESC-50").exists()
    monkeypatch.setattr(data, "N_CLIPS", len(clip_rows()) - 1)
    root = download_esc50(tmp_path / "data", url=archive.as_uri(), verify=False)
    assert (root / "meta" / "esc50.csv").is_file()


def test_verify_esc50_row_count(esc_root, monkeypatch):
    with pytest.raises(DatasetError) as err:
        verify_esc50(esc_root)  # N_CLIPS is 2000, the csv has 10 rows
    assert "10 rows" in str(err.value) and "expected 2000" in str(err.value)
    monkeypatch.setattr(data, "N_CLIPS", 11)
    with pytest.raises(DatasetError, match="expected 11"):
        verify_esc50(esc_root)
    monkeypatch.setattr(data, "N_CLIPS", 10)
    assert verify_esc50(esc_root) == 10


# ---------------------------------------------------------------------------------------------
# Metadata validation: each bad csv is one DatasetError naming the csv and the bad row/value.

def _csv_text(rows: list[dict]) -> str:
    return "\n".join([CSV_COLUMNS] + [
        f"{r['filename']},{r['fold']},{r['target']},{r['category']},{r['esc10']},{r['src_file']},{r['take']}"
        for r in rows]) + "\n"


def _edit(i: int, **kw):
    def f(rows):
        rows[i].update(kw)
        return _csv_text(rows)
    return f


def _dup_name(rows):
    rows[3]["filename"] = rows[0]["filename"]
    return _csv_text(rows)


def _dup_stem(rows):  # the .flac name of the clip of row 0: the same clip listed twice
    rows[3]["filename"] = rows[0]["filename"].replace(".wav", ".flac")
    return _csv_text(rows)


def _relabel_target(rows):  # targets 1 and 2, no 0: not 0..n_classes-1
    for r in rows:
        r["target"] = 2 if r["target"] == 0 else r["target"]
    return _csv_text(rows)


def _drop_column(rows):
    return "\n".join(line.rsplit(",", 4)[0].replace(",target", "") if i == 0 else line
                     for i, line in enumerate(_csv_text(rows).splitlines())) + "\n"


BAD_META = {
    "zero bytes": (lambda rows: "", ["empty"]),
    "blank": (lambda rows: "\n\n", ["empty"]),
    "header only": (lambda rows: CSV_COLUMNS + "\n", ["no rows"]),
    "unparsable": (lambda rows: _csv_text(rows) + 'x,"unterminated\n', ["cannot be parsed"]),
    "extra fields": (lambda rows: _csv_text(rows) + "a,1,0,dog,False,1,A,extra,more\n", ["cannot be parsed"]),
    "missing column": (lambda rows: _csv_text(rows).replace(CSV_COLUMNS, CSV_COLUMNS.replace("category", "label")),
                       ["lacks columns", "'category'"]),
    "text fold": (_edit(2, fold="five"), ["line 4", "fold 'five' is not an integer", clip_name(3, 1)]),
    "fractional fold": (_edit(2, fold="1.5"), ["line 4", "fold", "1.5", "not an integer"]),
    "empty fold": (_edit(2, fold=""), ["line 4", "fold", "not an integer"]),
    "text target": (_edit(6, target="dog"), ["line 8", "target 'dog' is not an integer"]),
    "fold 7": (_edit(6, fold=7), ["line 8", clip_name(2, 0), "fold 7 is not an ESC-50 fold (1-5)"]),
    "fold 0": (_edit(0, fold=0), ["line 2", "fold 0"]),
    "duplicated file name": (_dup_name, ["listed more than once", "lines 2, 5", Path(clip_name(1, 1)).stem]),
    "same clip .wav and .flac": (_dup_stem, ["listed more than once", Path(clip_name(1, 1)).stem]),
    "two categories for a target": (_edit(5, category="cat"), ["target 0 has 2 categories", "'cat'", "'rooster'"]),
    "one category, two targets": (lambda rows: _csv_text(rows).replace("rooster", "dog"),
                                  ["category 'dog' has targets [0, 1]"]),
    "targets not from 0": (_relabel_target, ["target 2 is outside 0..1", "missing: [0]"]),
    "negative target": (_edit(0, target=-1, category="cat"), ["target -1 is outside 0..2"]),
    "empty file name": (_edit(4, filename=""), ["line 6", "empty filename"]),
    "empty category": (_edit(4, category=""), ["line 6", "empty category"]),
}


@pytest.mark.parametrize("case", list(BAD_META))
def test_bad_metadata_is_one_dataset_error_naming_the_csv(esc_root, case):
    make_text, words = BAD_META[case]
    csv = esc_root / "meta" / "esc50.csv"
    csv.write_text(make_text(clip_rows()))
    for call in (lambda: data.read_meta(esc_root), lambda: ESC50(esc_root), lambda: verify_esc50(esc_root)):
        with pytest.raises(DatasetError) as err:
            call()
        msg = str(err.value)
        assert str(csv) in msg, msg
        for w in words:
            assert w in msg, (w, msg)
        assert "\n" not in msg.strip()


def test_read_meta_types_and_class_names(esc_root):
    meta = data.read_meta(esc_root)
    assert len(meta) == 10
    assert meta["fold"].dtype == np.int64 and meta["target"].dtype == np.int64
    assert data.class_names(meta) == ["rooster", "dog"]
    # an integral float fold ("3.0") is accepted as fold 3
    rows = clip_rows()
    rows[0]["fold"] = "1.0"
    (esc_root / "meta" / "esc50.csv").write_text(_csv_text(rows))
    assert data.read_meta(esc_root)["fold"].tolist()[0] == 1


def test_fold_with_no_clips_is_refused(esc_root):
    rows = [r for r in clip_rows() if r["fold"] != 5]
    csv = write_csv(esc_root, rows)
    assert len(ESC50(esc_root, folds=(1, 2))) == 4
    with pytest.raises(DatasetError) as err:
        ESC50(esc_root, folds=(5,))
    assert str(err.value) == f"fold 5 has no clips in {csv}"
    with pytest.raises(DatasetError, match="fold 5 has no clips"):
        ESC50(esc_root)  # all folds by default


@pytest.mark.parametrize("folds", [("x",), (1.5,), ()])
def test_bad_fold_values(esc_root, folds):
    with pytest.raises(DatasetError, match="folds are 1-5"):
        ESC50(esc_root, folds=folds)


def test_single_int_fold(esc_root):
    assert ESC50(esc_root, folds=4).folds == (4,)


@pytest.mark.parametrize("kw, word", [({"sample_rate": 0}, "sample_rate"), ({"sample_rate": 16000.5}, "16000.5"),
                                      ({"duration": float("nan")}, "nan"), ({"duration": -1}, "-1"),
                                      ({"on_bad_clip": "ignore"}, "ignore")])
def test_bad_dataset_parameters_are_config_errors(esc_root, kw, word):
    with pytest.raises(ConfigError, match=word):
        ESC50(esc_root, **kw)


# ---------------------------------------------------------------------------------------------
# Bad clips: "error" raises by name when decoded; "skip" drops and lists them.

def _flac(root: Path, name: str) -> Path:
    return root / "audio" / (Path(name).stem + ".flac")


def _wav(root: Path, name: str) -> Path:
    return root / "audio" / (Path(name).stem + ".wav")


def spoil_clips(root: Path) -> dict:
    """Make five clips of the tiny dataset (one per fold) bad in five ways; returns
    {csv name: word in the reason}."""
    sr = 44100
    bad = {}
    # odd folds are .wav: NaN in a float WAV; truncated 16-bit WAV; missing
    name = clip_name(1, 0)
    x = clip_signal(1, 0, sr)
    x[100] = np.nan
    sf.write(str(_wav(root, name)), x, sr, subtype="FLOAT")
    bad[name] = "NaN"
    name = clip_name(3, 1)
    raw = _wav(root, name).read_bytes()
    _wav(root, name).write_bytes(raw[:len(raw) // 2])
    bad[name] = "truncated"
    name = clip_name(5, 0)
    _wav(root, name).unlink()
    bad[name] = "missing"
    # even folds are .flac: silent; 0 bytes
    name = clip_name(2, 0)
    write_audio(_flac(root, name), np.zeros(4000, dtype=np.float32), 16000)
    bad[name] = "silent"
    name = clip_name(4, 1)
    _flac(root, name).write_bytes(b"")
    bad[name] = "0 bytes"
    return bad


def test_bad_clips_raise_by_name_in_error_mode(esc_root):
    bad = spoil_clips(esc_root)
    ds = ESC50(esc_root)  # default on_bad_clip="error": nothing is decoded yet
    assert ds.on_bad_clip == "error" and ds.skipped == [] and len(ds) == 10
    for i, name in enumerate(ds.filenames):
        if name in bad:
            with pytest.raises((AudioFileError, DatasetError)) as err:
                ds.waveform(i)
            assert Path(name).stem in str(err.value) and bad[name] in str(err.value)
        else:
            assert ds.waveform(i).shape == (80000,)


def test_skip_mode_drops_and_lists_bad_clips(esc_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(tmp_path / "cache"))
    bad = spoil_clips(esc_root)
    with pytest.warns(UserWarning, match="skipped 5 bad clips"):
        ds = ESC50(esc_root, on_bad_clip="skip")
    assert [s["filename"] for s in ds.skipped] == [n for n in data.read_meta(esc_root)["filename"] if n in bad]
    for s in ds.skipped:
        assert bad[s["filename"]] in s["reason"] and Path(s["filename"]).stem in s["reason"]
    good = [r for r in clip_rows() if r["filename"] not in bad]
    assert len(ds) == 5
    assert ds.filenames == [r["filename"] for r in good]
    assert ds.labels.tolist() == [r["target"] for r in good]
    assert ds.meta.index.tolist() == list(range(5))
    assert len(ds.digests) == 5 and ds.identity()["n_clips"] == 5
    feats = fold_features(ds, FeatureConfig.mel_default())
    assert feats.shape == (5, 1, 64, 501)
    for i, r in enumerate(good):  # kept clips decoded once, at their new positions
        torch.testing.assert_close(ds.waveform(i), load_clip(ds.path(i), 16000))
        assert ds[i][1] == r["target"]
    # a dataset whose requested fold loses every clip is refused, not empty
    _flac(esc_root, clip_name(2, 1)).write_bytes(b"")
    with pytest.raises(DatasetError, match="fold 2 has no clips left.*all 2 were bad"), pytest.warns(UserWarning):
        ESC50(esc_root, folds=(2, 3), on_bad_clip="skip")


def test_skip_mode_on_a_clean_dataset_skips_nothing(esc_root):
    ds = ESC50(esc_root, folds=(1, 2), on_bad_clip="skip")
    assert ds.skipped == [] and len(ds) == 4


def test_waveform_is_reread_after_the_file_changes(esc_root):
    ds = ESC50(esc_root, folds=(2,))
    before = ds.waveform(1)
    path = ds.path(1)
    tmp = path.with_name("new.flac")
    write_audio(tmp, sine(1234.0, 16000, CLIP_SECONDS), 16000)
    os.replace(tmp, path)
    after = ds.waveform(1)
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, load_clip(path, 16000))


# ---------------------------------------------------------------------------------------------
# Digests and dataset identity

def test_file_digest_is_sha256_and_memoised(esc_root, monkeypatch):
    path = esc_root / "meta" / "esc50.csv"
    assert data.file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    import audiointerp.provenance as provenance

    calls = []
    real = provenance.hashlib.sha256
    monkeypatch.setattr(provenance.hashlib, "sha256", lambda *a: calls.append(a) or real(*a))
    for _ in range(3):
        data.file_digest(path)
    assert calls == []  # unchanged: served from memory
    tmp = path.with_name("new.csv")
    tmp.write_text(path.read_text() + "\n")
    os.replace(tmp, path)
    assert data.file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sum(c == () for c in calls) == 1  # hashed once (the test's own sha256(bytes) call aside)
    with pytest.raises(DatasetError, match="nothing-here.wav"):
        data.file_digest(esc_root / "nothing-here.wav")


def test_identity_of_a_copy_and_after_a_change(esc_root, tmp_path):
    ds = ESC50(esc_root, folds=(1, 2))
    ident = ds.identity()
    assert set(ident) == {"meta_sha256", "clips_sha256", "n_clips", "folds", "root"}
    assert ident["n_clips"] == 4 and ident["folds"] == [1, 2] and ident["root"] == str(esc_root)
    assert ident["meta_sha256"] == hashlib.sha256((esc_root / "meta" / "esc50.csv").read_bytes()).hexdigest()
    lines = "".join(f"{n}\t{hashlib.sha256(ds.path(i).read_bytes()).hexdigest()}\n" for i, n in enumerate(ds.filenames))
    assert ident["clips_sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    assert ds.digests[2] == hashlib.sha256(ds.path(2).read_bytes()).hexdigest()
    assert ds.clip_digest(2) == ds.digests[2][:16] and len(ds.clip_digest(2)) == 16

    copy = tmp_path / "elsewhere" / "ESC-50-copy"
    shutil.copytree(esc_root, copy)
    other = ESC50(copy, folds=(1, 2)).identity()
    assert other["root"] == str(copy)
    assert {k: v for k, v in other.items() if k != "root"} == {k: v for k, v in ident.items() if k != "root"}

    write_audio(_flac(copy, clip_name(2, 0)), sine(900.0, 16000, CLIP_SECONDS), 16000)
    changed = ESC50(copy, folds=(1, 2)).identity()
    assert changed["clips_sha256"] != ident["clips_sha256"] and changed["meta_sha256"] == ident["meta_sha256"]
    assert ESC50(esc_root, folds=(1,)).identity()["clips_sha256"] != ident["clips_sha256"]


# ---------------------------------------------------------------------------------------------
# The content-addressed feature cache

def _no_features(*args, **kwargs):
    raise AssertionError("features recomputed instead of read from the cache")


def test_changed_clip_is_recomputed(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "a" / "esc50"
    shutil.copytree(synthetic_root, root)
    cfg = FeatureConfig(kind="mel", duration=1.0)
    first = fold_features(ESC50(root, folds=(5,), duration=1.0), cfg)
    assert first.shape == (6, 1, 64, 101)
    # replace clip 0 of fold 5 with faint noise: its features must follow the new file
    path = ESC50(root, folds=(5,), duration=1.0).path(0)
    sf.write(path, noise(99, 22050, amp=0.01), 22050)
    ds = ESC50(root, folds=(5,), duration=1.0)
    again = fold_features(ds, cfg)
    assert not torch.equal(again[0], first[0])  # the old cache served the stale features here
    assert torch.equal(again[1:], first[1:])
    torch.testing.assert_close(again, processing.features(ds.waveforms(), cfg)[0])
    assert len(list((tmp_path / "cache").glob("features-mel-*.pt"))) == 2


def test_same_content_in_another_folder_hits_the_cache(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(tmp_path / "cache"))
    cfg = FeatureConfig(kind="mel", duration=1.0)
    first = fold_features(ESC50(synthetic_root, folds=(5,), duration=1.0), cfg)
    copy = tmp_path / "b" / "esc50"
    shutil.copytree(synthetic_root, copy)
    monkeypatch.setattr(processing, "features", _no_features)
    assert torch.equal(fold_features(ESC50(copy, folds=(5,), duration=1.0), cfg), first)
    # a changed copy is not served the original's features
    sf.write(ESC50(copy, folds=(5,), duration=1.0).path(3), noise(98, 22050), 22050)
    with pytest.raises(AssertionError, match="recomputed"):
        fold_features(ESC50(copy, folds=(5,), duration=1.0), cfg)


def test_cache_entry_for_other_clips_or_tampered_is_recomputed(esc_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(tmp_path / "cache"))
    cfg = FeatureConfig.mel_default()
    ds = ESC50(esc_root, folds=(3,))
    feats = fold_features(ds, cfg)
    (path,) = (tmp_path / "cache").glob("features-mel-*.pt")
    for tamper in ({"digests": ["0" * 64] * 2}, {"filenames": ["a.wav", "b.wav"]},
                   {"features": torch.zeros(1, 1, 64, 501)}, {"features": torch.full((2, 1, 64, 501), float("nan"))},
                   {"format": 1}):
        entry = torch.load(path, weights_only=True)
        entry.update(tamper)
        torch.save(entry, path)
        calls = []
        real = processing.features
        with monkeypatch.context() as m:
            m.setattr(processing, "features", lambda *a, **k: calls.append(1) or real(*a, **k))
            assert torch.equal(fold_features(ds, cfg), feats)
        assert calls, tamper  # recomputed
        assert torch.equal(torch.load(path, weights_only=True)["features"], feats)
    path.write_bytes(path.read_bytes()[:100])  # truncated entry
    assert torch.equal(fold_features(ds, cfg), feats)


def test_cache_key_covers_config_rate_and_transform_code(esc_root, monkeypatch):
    ds = ESC50(esc_root, folds=(1,))
    key = data.feature_cache_key(ds, FeatureConfig.mel_default())
    assert len(key) == 64 and key == data.feature_cache_key(ds, FeatureConfig.mel_default())
    assert key != data.feature_cache_key(ds, FeatureConfig(n_mels=32))
    assert key != data.feature_cache_key(ESC50(esc_root, folds=(1,), duration=4.0), FeatureConfig.mel_default())
    monkeypatch.setattr(data, "transform_version", lambda: "other code")
    assert key != data.feature_cache_key(ds, FeatureConfig.mel_default())


def test_concurrent_computation_gives_one_valid_entry(esc_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(cache))
    cfg = FeatureConfig.mel_default()
    calls = []
    real = processing.features

    def slow(*args, **kwargs):  # long enough for the other thread to arrive while it runs
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(processing, "features", slow)
    results, errors = [None, None], []

    def work(k):
        try:
            results[k] = fold_features(ESC50(esc_root, folds=(4,)), cfg)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(calls) == 1  # computed once; the other waited on the lock and read the entry
    assert torch.equal(results[0], results[1])
    (entry,) = cache.glob("features-mel-*.pt")
    assert torch.equal(torch.load(entry, weights_only=True)["features"], results[0])
    assert not list(cache.glob("*.tmp"))


def test_clip_changed_while_computing_is_not_cached(esc_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(cache))
    ds = ESC50(esc_root, folds=(2,))
    real = processing.features

    def change_then_compute(wav, cfg):
        tmp = ds.path(0).with_name("new.flac")
        write_audio(tmp, sine(777.0, 16000, CLIP_SECONDS), 16000)
        os.replace(tmp, ds.path(0))
        return real(wav, cfg)

    monkeypatch.setattr(processing, "features", change_then_compute)
    with pytest.raises(DatasetError, match=f"changed on disk.*{clip_name(2, 1)}"):
        fold_features(ds, FeatureConfig.mel_default())
    assert not list(cache.glob("features-*.pt"))


def test_fold_features_bad_batch_size(esc_root):
    with pytest.raises(ConfigError, match="batch_size"):
        fold_features(ESC50(esc_root, folds=(1,)), FeatureConfig.mel_default(), batch_size=0)


# ---------------------------------------------------------------------------------------------
# settings: the one module that reads the environment

def test_settings_read_the_environment(tmp_path, monkeypatch):
    from audiointerp import settings

    for name in settings.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    assert settings.esc50_root_env() is None and settings.noises_env() is None
    assert settings.cache_dir() == Path.home() / ".cache" / "audiointerp"
    help_text = settings.environment_help()
    for name in ("ESC50_ROOT", "AUDIOINTERP_NOISES", "AUDIOINTERP_CACHE"):
        assert name in help_text
    assert help_text.count("(now: unset)") == 3

    monkeypatch.setenv("ESC50_ROOT", "  ")  # blank counts as unset
    assert settings.esc50_root_env() is None
    monkeypatch.setenv("ESC50_ROOT", str(tmp_path / "esc"))
    monkeypatch.setenv("AUDIOINTERP_NOISES", "/somewhere/noises")
    monkeypatch.setenv("AUDIOINTERP_CACHE", "~/my-cache")
    assert settings.esc50_root_env() == str(tmp_path / "esc")
    assert settings.noises_env() == "/somewhere/noises"
    assert settings.cache_dir() == Path.home() / "my-cache"
    assert data.cache_dir() == settings.cache_dir()  # the old name keeps working
    help_text = settings.environment_help()
    assert f"(now: {tmp_path / 'esc'})" in help_text and "(now: /somewhere/noises)" in help_text
    assert len(help_text.splitlines()) == 4
    with pytest.raises(KeyError, match="HOME"):
        settings.env("HOME")


def test_data_and_noise_read_the_environment_only_through_settings():
    import re

    from audiointerp import noise as noise_mod

    for mod in (data, noise_mod):
        source = Path(mod.__file__).read_text()
        assert not re.search(r"os\.environ|getenv", source), mod.__name__


def test_unusable_cache_folder_still_gives_features(esc_root, tmp_path, monkeypatch):
    import filelock

    monkeypatch.setenv("AUDIOINTERP_CACHE", str(tmp_path / "cache"))
    ds = ESC50(esc_root, folds=(1,))
    cfg = FeatureConfig.mel_default()

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(filelock.FileLock, "acquire", denied)
    with pytest.warns(UserWarning, match="without the cache"):
        feats = fold_features(ds, cfg)
    torch.testing.assert_close(feats, processing.features(ds.waveforms(), cfg)[0])
    assert not list((tmp_path / "cache").glob("features-*.pt"))
    (tmp_path / "blocked").write_text("a file, not a folder")
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(tmp_path / "blocked" / "cache"))
    with pytest.raises(ConfigError, match="AUDIOINTERP_CACHE"):
        fold_features(ds, cfg)
