"""ESC-50 (Piczak, "ESC: Dataset for Environmental Sound Classification", ACM MM 2015).

The dataset root is the folder holding ``meta/esc50.csv`` and ``audio/``; it comes from the
``ESC50_ROOT`` environment variable unless given. Clips may be ``.wav`` (official release) or
``.flac`` (the 16 kHz copy in ``../shared/ESC-50``) at any rate and channel count: they are
downmixed, resampled, peak-normalised and padded/cut to 5.0 s.

Folds follow the prior art: 1-3 train, 4 validation, 5 test. ``make data`` downloads the
official release with :func:`download_esc50` for users with internet.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .audio_io import load_clip
from .errors import DatasetError

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
N_CLIPS = 2000
N_CLASSES = 50
TRAIN_FOLDS = (1, 2, 3)
VAL_FOLDS = (4,)
TEST_FOLDS = (5,)
AUDIO_EXTS = (".wav", ".flac")


def esc50_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve and check the ESC-50 root.

    Args:
        root: a folder, or None to read the ``ESC50_ROOT`` environment variable.

    Returns:
        the folder as a Path.

    Raises:
        DatasetError: ``ESC50_ROOT`` unset, or the folder lacks ``meta/esc50.csv`` or ``audio/``.
    """
    if root is None:
        root = os.environ.get("ESC50_ROOT")
        if not root:
            raise DatasetError(
                "ESC50_ROOT is not set: point it at the ESC-50 folder holding meta/esc50.csv and "
                "audio/ (e.g. export ESC50_ROOT=../shared/ESC-50), or run `make data` to download it")
    root = Path(root).expanduser()
    if not (root / "meta" / "esc50.csv").is_file():
        raise DatasetError(f"ESC-50 root {root} has no meta/esc50.csv (ESC50_ROOT must point at the "
                           f"folder that holds meta/ and audio/)")
    if not (root / "audio").is_dir():
        raise DatasetError(f"ESC-50 root {root} has no audio/ folder")
    return root


def read_meta(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The 2000-row ESC-50 metadata (``filename, fold, target, category, esc10, src_file, take``)."""
    root = esc50_root(root)
    meta = pd.read_csv(root / "meta" / "esc50.csv")
    missing = {"filename", "fold", "target", "category"} - set(meta.columns)
    if missing:
        raise DatasetError(f"{root / 'meta' / 'esc50.csv'} lacks columns {sorted(missing)}")
    return meta


def class_names(meta: pd.DataFrame) -> list[str]:
    """Class names indexed by target (from the ``category`` column)."""
    pairs = meta[["target", "category"]].drop_duplicates().sort_values("target")
    return pairs["category"].tolist()


def resolve_audio(root: Path, filename: str) -> Path:
    """Path of clip ``filename`` under ``root/audio``, accepting .wav or .flac.

    Raises:
        DatasetError: neither file exists (the message names the clip).
    """
    stem = Path(filename).stem
    for ext in (Path(filename).suffix, *AUDIO_EXTS):
        p = root / "audio" / f"{stem}{ext}"
        if p.is_file():
            return p
    raise DatasetError(f"clip {filename} is missing from {root / 'audio'} (looked for "
                       f"{', '.join(stem + e for e in AUDIO_EXTS)})")


class ESC50(torch.utils.data.Dataset):
    """ESC-50 clips of some folds as mono waveforms at the model rate.

    ``dataset[i]`` is ``(waveform, label)``: float32 ``[n_samples]`` (peak-normalised, padded
    or cut to ``duration`` s at ``sample_rate`` Hz) and the int ``target``. Decoded and
    resampled clips are cached in memory.

    Args:
        root: dataset root, or None for ``ESC50_ROOT``.
        folds: folds to include (1-5).
        sample_rate: model rate in Hz.
        duration: clip length in seconds.

    Raises:
        DatasetError: bad root or folds; a missing clip (named).
        AudioFileError: a corrupt or empty clip (named).
    """

    def __init__(self, root=None, folds=(1, 2, 3, 4, 5), sample_rate: int = 16000, duration: float = 5.0):
        self.root = esc50_root(root)
        meta = read_meta(self.root)
        folds = tuple(int(f) for f in folds)
        bad = [f for f in folds if f not in range(1, 6)]
        if bad:
            raise DatasetError(f"ESC-50 folds are 1-5, got {bad}")
        self.class_names = class_names(meta)
        self.meta = meta[meta["fold"].isin(folds)].reset_index(drop=True)
        self.folds = folds
        self.sample_rate = int(sample_rate)
        self.duration = float(duration)
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def filenames(self) -> list[str]:
        """Official file names (``.wav``) in dataset order."""
        return self.meta["filename"].tolist()

    @property
    def labels(self) -> np.ndarray:
        """int64 ``[n_clips]`` class indices."""
        return self.meta["target"].to_numpy(dtype=np.int64)

    def path(self, i: int) -> Path:
        """File of clip ``i`` (wav or flac)."""
        return resolve_audio(self.root, self.meta["filename"].iloc[i])

    def waveform(self, i: int) -> torch.Tensor:
        """float32 ``[n_samples]`` of clip ``i`` (cached after the first read)."""
        if i not in self._cache:
            self._cache[i] = load_clip(self.path(i), self.sample_rate, self.duration)
        return self._cache[i]

    def __getitem__(self, i: int):
        return self.waveform(i), int(self.meta["target"].iloc[i])

    def waveforms(self, indices=None) -> torch.Tensor:
        """float32 ``[n, n_samples]`` of the given clips (all by default)."""
        idx = range(len(self)) if indices is None else indices
        return torch.stack([self.waveform(int(i)) for i in idx])


# ---------------------------------------------------------------------------------------------
# Feature cache: features of whole folds, computed once per feature configuration.

def cache_dir() -> Path:
    """Folder for cached features: ``AUDIOINTERP_CACHE`` or ``~/.cache/audiointerp``."""
    return Path(os.environ.get("AUDIOINTERP_CACHE", Path.home() / ".cache" / "audiointerp"))


def fold_features(dataset: ESC50, cfg, batch_size: int = 64, cache: bool = True,
                  progress: bool = False) -> torch.Tensor:
    """Features of every clip of ``dataset``, cached on disk per (files, feature config).

    Args:
        dataset: the clips.
        cfg: :class:`audiointerp.processing.FeatureConfig` (its rate must be the dataset's).
        cache: read/write the on-disk cache (:func:`cache_dir`).

    Returns:
        float32 ``[n_clips, 1, n_freq, n_frames]`` in dB.

    Raises:
        ConfigError: the feature rate or duration differs from the dataset's (both quoted).
    """
    from .errors import ConfigError
    from .processing import features

    if int(cfg.sample_rate) != dataset.sample_rate or float(cfg.duration) != dataset.duration:
        raise ConfigError(f"features at {cfg.sample_rate} Hz / {cfg.duration} s cannot use clips loaded at "
                          f"{dataset.sample_rate} Hz / {dataset.duration} s")

    key = hashlib.sha1(repr((dataset.root.resolve().as_posix(), dataset.filenames, sorted(cfg.to_dict().items()),
                             dataset.duration)).encode()).hexdigest()[:16]
    path = cache_dir() / f"features-{cfg.kind}-{key}.pt"
    if cache and path.is_file():
        try:
            return torch.load(path)
        except Exception:
            path.unlink(missing_ok=True)
    from tqdm.auto import tqdm

    out = []
    starts = range(0, len(dataset), batch_size)
    for s in tqdm(starts, desc=f"{cfg.kind} features", disable=not progress):
        wav = dataset.waveforms(range(s, min(s + batch_size, len(dataset))))
        out.append(features(wav, cfg)[0])
    feats = torch.cat(out) if out else torch.empty(0, *cfg.shape)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(feats, tmp)
        os.replace(tmp, path)
    return feats


# ---------------------------------------------------------------------------------------------
# Download (make data)

def verify_esc50(root: str | os.PathLike) -> int:
    """Check a dataset folder: 2000 rows in the csv, each with an audio file of its name.

    Returns:
        the number of clips checked (2000).

    Raises:
        DatasetError: wrong row count, or clips missing (the first few are named).
    """
    root = esc50_root(root)
    meta = read_meta(root)
    if len(meta) != N_CLIPS:
        raise DatasetError(f"{root}/meta/esc50.csv has {len(meta)} rows, expected {N_CLIPS}")
    present = {p.stem for p in (root / "audio").iterdir() if p.suffix in AUDIO_EXTS}
    missing = [f for f in meta["filename"] if Path(f).stem not in present]
    if missing:
        raise DatasetError(f"{len(missing)} clips listed in esc50.csv are missing from {root}/audio, "
                           f"e.g. {missing[:3]}")
    return len(meta)


def download_esc50(dest: str | os.PathLike = "data", url: str = ESC50_URL, verify: bool = True) -> Path:
    """Download and unpack the official ESC-50 release (GitHub master archive).

    The archive's ``ESC-50-master/`` folder becomes ``dest/ESC-50`` (holding ``meta/`` and
    ``audio/``); set ``ESC50_ROOT`` to it. An existing, complete copy is kept as is.

    Args:
        dest: parent folder.
        url: archive address (any urllib URL; tests use ``file://``).
        verify: run :func:`verify_esc50` on the result.

    Returns:
        the dataset root.

    Raises:
        DatasetError: the download fails, the archive has no ``meta/esc50.csv``, or it does
            not verify.
    """
    dest = Path(dest)
    root = dest / "ESC-50"
    if (root / "meta" / "esc50.csv").is_file():
        if verify:
            verify_esc50(root)
        return root
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        archive = Path(tmp) / "esc50.zip"
        try:
            urllib.request.urlretrieve(url, archive)
        except Exception as exc:
            raise DatasetError(f"could not download ESC-50 from {url}: {exc}") from None
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile:
            raise DatasetError(f"the file downloaded from {url} is not a zip archive") from None
        csvs = list(Path(tmp).glob("*/meta/esc50.csv"))
        if not csvs:
            raise DatasetError(f"the archive from {url} has no <top>/meta/esc50.csv")
        unpacked = csvs[0].parent.parent
        if verify:  # check before moving into place: a bad download leaves nothing behind
            verify_esc50(unpacked)
        shutil.move(str(unpacked), root)
    return root
