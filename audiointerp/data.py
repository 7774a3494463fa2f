"""ESC-50 (Piczak, "ESC: Dataset for Environmental Sound Classification", ACM MM 2015).

The dataset root is the folder holding ``meta/esc50.csv`` and ``audio/``; it comes from the
``ESC50_ROOT`` environment variable (:mod:`audiointerp.settings`) unless given. Clips may be
``.wav`` (official release) or ``.flac`` (the 16 kHz copy in ``../shared/ESC-50``) at any rate
and channel count: they are downmixed, resampled, peak-normalised and padded/cut to 5.0 s.

Folds follow the prior art: 1-3 train, 4 validation, 5 test. ``make data`` downloads the
official release with :func:`download_esc50` for users with internet.

What is read is checked, so that a bad file gives one clear error instead of wrong numbers:
the metadata (:func:`read_meta`), every clip (:func:`audiointerp.audio_io.load_clip`: corrupt,
truncated, empty, silent, NaN/Inf), and the on-disk content-addressed cache
(:func:`cached_tensor`: fold features :func:`fold_features`, noisy-condition features
:func:`mixed_features`, and any tensor a caller keys with :func:`content_key`), keyed and
verified by the SHA-256 of the clips' contents (see :func:`file_digest` and
:meth:`ESC50.identity`), written atomically under a per-entry file lock so that concurrent
processes compute an entry once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
import uuid
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import settings
from .audio_io import load_clip
from .errors import AudioFileError, ConfigError, DatasetError
from .provenance import file_sha256
from .settings import cache_dir  # noqa: F401  (re-exported: data.cache_dir is public API)

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
N_CLIPS = 2000
N_CLASSES = 50
FOLDS = (1, 2, 3, 4, 5)
TRAIN_FOLDS = (1, 2, 3)
VAL_FOLDS = (4,)
TEST_FOLDS = (5,)
AUDIO_EXTS = (".wav", ".flac")
META_COLUMNS = ("filename", "fold", "target", "category")
ON_BAD_CLIP = ("error", "skip")
#: The metadata file of ESC-50 under ``meta/``; another dataset laid out like ESC-50 names its own.
ESC50_META = "esc50.csv"


def _meta_name(metadata: str | None) -> str:
    """The metadata file name (a bare ``<name>.csv`` under ``meta/``).

    Raises:
        ConfigError: a path or a name that is not a ``.csv``.
    """
    name = ESC50_META if metadata is None else str(metadata)
    if Path(name).name != name or not name.endswith(".csv"):
        raise ConfigError(f"metadata must be a .csv file name under meta/ (e.g. esc50.csv), got {metadata!r}")
    return name


def esc50_root(root: str | os.PathLike | None = None, metadata: str | None = None) -> Path:
    """Resolve and check a dataset root laid out like ESC-50 (``meta/<metadata>`` and ``audio/``).

    Args:
        root: a folder, or None to read the ``ESC50_ROOT`` environment variable
            (:func:`audiointerp.settings.esc50_root_env`).
        metadata: the csv under ``meta/`` (default ``esc50.csv``; another dataset names its own).

    Returns:
        the folder as a Path (``~`` expanded, not resolved).

    Raises:
        DatasetError: ``ESC50_ROOT`` unset, or the folder lacks ``meta/<metadata>`` or ``audio/``.
        ConfigError: a ``metadata`` that is not a bare ``.csv`` name.
    """
    metadata = _meta_name(metadata)
    if root is None:
        root = settings.esc50_root_env()
        if not root:
            raise DatasetError(
                "ESC50_ROOT is not set: point it at the ESC-50 folder holding meta/esc50.csv and "
                "audio/ (e.g. export ESC50_ROOT=../shared/ESC-50), or run `make data` to download it")
    root = Path(root).expanduser()
    if not (root / "meta" / metadata).is_file():
        raise DatasetError(f"dataset root {root} has no meta/{metadata} (ESC50_ROOT or root must point at the "
                           f"folder that holds meta/ and audio/)")
    if not (root / "audio").is_dir():
        raise DatasetError(f"ESC-50 root {root} has no audio/ folder")
    return root


# ---------------------------------------------------------------------------------------------
# Metadata

def _row(csv: Path, meta: pd.DataFrame, i: int) -> str:
    """``<csv>, line N (<filename>)`` for data row ``i`` (line 1 is the header)."""
    name = meta["filename"].iloc[i] if "filename" in meta.columns else None
    return f"{csv}, line {i + 2}" + (f" ({name})" if isinstance(name, str) and name else "")


def _integer_column(meta: pd.DataFrame, column: str, csv: Path) -> np.ndarray:
    """``meta[column]`` as int64, or DatasetError naming the first row that is not an integer."""
    values = pd.to_numeric(meta[column], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(values) & (values == np.round(values))
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DatasetError(f"{_row(csv, meta, i)}: {column} {meta[column].iloc[i]!r} is not an integer")
    return values.astype(np.int64)


def validate_meta(meta: pd.DataFrame, csv: str | os.PathLike = "esc50.csv", folds=FOLDS) -> pd.DataFrame:
    """Check ESC-50 metadata and return it with typed columns.

    Checks: at least one row; the columns ``filename, fold, target, category``; non-empty,
    unique file names (also unique once the extension is dropped, since ``.wav`` and
    ``.flac`` name the same clip); integer ``fold`` in ``folds`` (ESC-50: :data:`FOLDS`, 1-5;
    None for another dataset: any integer >= 1); integer
    ``target``; non-empty ``category``; each target with exactly one category and each
    category with exactly one target; targets exactly ``0 .. n_classes-1``.

    Args:
        meta: the table as read by ``pandas.read_csv``.
        csv: the file it came from, for the messages.
        folds: the valid fold numbers (None: any integer >= 1).

    Returns:
        ``meta`` with ``filename``/``category`` as str and ``fold``/``target`` as int64 (a copy).

    Raises:
        DatasetError: the first problem found, naming ``csv`` and the offending line, file
            name and value.
    """
    csv = Path(csv)
    if len(meta) == 0:
        raise DatasetError(f"{csv} has no rows (only a header, or nothing)")
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing:
        raise DatasetError(f"{csv} lacks columns {missing} (it has {list(meta.columns)})")
    meta = meta.copy()
    for column in ("filename", "category"):
        bad = meta[column].isna() | (meta[column].astype(str).str.strip() == "")
        if bad.any():
            raise DatasetError(f"{_row(csv, meta, int(np.flatnonzero(bad.to_numpy())[0]))}: empty {column}")
        meta[column] = meta[column].astype(str)
    stems = meta["filename"].map(lambda f: Path(f).stem)
    dup = stems.duplicated(keep=False).to_numpy()
    if dup.any():
        first = stems.iloc[int(np.flatnonzero(dup)[0])]
        lines = [i + 2 for i in np.flatnonzero((stems == first).to_numpy())]
        raise DatasetError(f"{csv}: clip {first} is listed more than once (lines "
                           f"{', '.join(map(str, lines))}); each clip must have one row")
    meta["fold"] = _integer_column(meta, "fold", csv)
    outside = (~meta["fold"].isin(folds) if folds is not None else meta["fold"] < 1).to_numpy()
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        valid = f"an ESC-50 fold ({folds[0]}-{folds[-1]})" if folds is not None else "a fold number >= 1"
        raise DatasetError(f"{_row(csv, meta, i)}: fold {meta['fold'].iloc[i]} is not {valid}")
    meta["target"] = _integer_column(meta, "target", csv)
    per_target = meta.groupby("target")["category"].unique()
    for target, cats in per_target.items():
        if len(cats) > 1:
            lines = [i + 2 for i in np.flatnonzero((meta["target"] == target).to_numpy())][:6]
            raise DatasetError(f"{csv}: target {target} has {len(cats)} categories {sorted(cats)} "
                               f"(lines {', '.join(map(str, lines))}...); each target needs exactly one")
    per_cat = meta.groupby("category")["target"].unique()
    for cat, targets in per_cat.items():
        if len(targets) > 1:
            raise DatasetError(f"{csv}: category {cat!r} has targets {sorted(int(t) for t in targets)}; "
                               f"each category needs exactly one target")
    n_classes = len(per_target)
    outside = ((meta["target"] < 0) | (meta["target"] >= n_classes)).to_numpy()
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        absent = sorted(set(range(n_classes)) - set(per_target.index.tolist()))
        raise DatasetError(f"{_row(csv, meta, i)}: target {meta['target'].iloc[i]} is outside 0..{n_classes - 1} "
                           f"(targets must number the {n_classes} classes from 0; missing: {absent})")
    return meta


def read_meta(root: str | os.PathLike | None = None, metadata: str | None = None) -> pd.DataFrame:
    """The metadata ``meta/<metadata>`` (default ``esc50.csv``), validated (:func:`validate_meta`;
    ESC-50's folds are 1-5, another dataset's any integers >= 1).

    Args:
        root: dataset root, or None for ``ESC50_ROOT``.
        metadata: the csv under ``meta/`` (columns ``filename, fold, target, category``).

    Returns:
        one row per clip (2000 for ESC-50) with the csv's columns (``filename, fold, target,
        category, esc10, src_file, take``); ``fold`` and ``target`` int64, in csv order.

    Raises:
        DatasetError: bad root; an unreadable, empty (0 bytes), header-only or unparsable csv;
            any problem found by :func:`validate_meta` (the csv and the row are named).
    """
    metadata = _meta_name(metadata)
    root = esc50_root(root, metadata)
    csv = root / "meta" / metadata
    try:
        meta = pd.read_csv(csv)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{csv} is empty (0 bytes or blank): it must hold the ESC-50 metadata "
                           f"with a header line {','.join(META_COLUMNS)},...") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{csv} cannot be parsed as CSV: {str(exc).strip()}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {csv}: {exc}") from None
    return validate_meta(meta, csv, FOLDS if metadata == ESC50_META else None)


def class_names(meta: pd.DataFrame) -> list[str]:
    """Class names indexed by target (from the ``category`` column of :func:`read_meta`).

    Returns:
        ``[n_classes]`` str, entry ``t`` the category of target ``t``.
    """
    pairs = meta[["target", "category"]].drop_duplicates().sort_values("target")
    return pairs["category"].tolist()


def resolve_audio(root: Path, filename: str) -> Path:
    """Path of clip ``filename`` under ``root/audio``, accepting .wav or .flac.

    Raises:
        DatasetError: neither file exists (the message names the clip).
    """
    stem = Path(filename).stem
    for ext in dict.fromkeys((Path(filename).suffix, *AUDIO_EXTS)):
        p = root / "audio" / f"{stem}{ext}"
        if p.is_file():
            return p
    raise DatasetError(f"clip {filename} is missing from {root / 'audio'} (looked for "
                       f"{', '.join(stem + e for e in AUDIO_EXTS)})")


# ---------------------------------------------------------------------------------------------
# Content digests

def _stat_signature(path: Path) -> tuple:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, as 64 lowercase hex digits (:func:`audiointerp.provenance.file_sha256`:
    memoised per path and (size, mtime_ns, inode, ctime_ns), so an unchanged file costs one ``stat``).

    Raises:
        DatasetError: the file is missing or unreadable (named).
    """
    try:
        return file_sha256(path)
    except OSError as exc:
        raise DatasetError(f"cannot read {path} to hash it: {exc.strerror or exc}") from None


def clips_sha256(filenames, digests) -> str:
    """SHA-256 hex over the lines ``"<filename>\\t<file sha256>\\n"`` of the clips, in order.

    The dataset's content identity: it changes when a clip's bytes, its name, the set of
    clips or their order change, and not when the folder moves.
    """
    h = hashlib.sha256()
    for name, digest in zip(filenames, digests, strict=True):
        h.update(f"{name}\t{digest}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The dataset

def _check_folds(folds, valid=FOLDS) -> tuple[int, ...]:
    what = "ESC-50 folds are 1-5" if valid is not None else "folds are integers >= 1"
    if isinstance(folds, (int, np.integer)):
        folds = (folds,)
    try:
        out = tuple(int(f) for f in folds)
        if any(float(f) != int(f) for f in folds):
            raise ValueError
    except (TypeError, ValueError):
        raise DatasetError(f"{what}, got {folds!r}") from None
    bad = [f for f in out if (f not in valid if valid is not None else f < 1)]
    if bad or not out:
        raise DatasetError(f"{what}, got {bad or list(out)}")
    return out


class ESC50(torch.utils.data.Dataset):
    """ESC-50 clips of some folds as mono waveforms at the model rate (or the clips of any
    dataset laid out like ESC-50: ``meta/<metadata>`` with ``filename, fold, target, category``
    and ``audio/``; any number of classes, any clip length and rate).

    ``dataset[i]`` is ``(waveform, label)``: float32 ``[n_samples]`` (peak-normalised, padded
    or cut to ``duration`` s at ``sample_rate`` Hz, ``n_samples = round(duration *
    sample_rate)``) and the int ``target``. Decoded and resampled clips are cached in memory
    (re-read when the file changes on disk).

    Args:
        root: dataset root, or None for ``ESC50_ROOT``.
        folds: folds to include (ESC-50: 1-5; another dataset: its fold numbers), in any order;
            clips stay in csv order.
        sample_rate: model rate in Hz (> 0).
        duration: clip length in seconds (> 0).
        on_bad_clip: ``"error"`` (default): a bad clip (missing, corrupt, truncated, empty,
            silent, NaN/Inf: :func:`audiointerp.audio_io.load_clip`) raises when it is first
            decoded, lazily. ``"skip"``: every clip is decoded once here; bad ones are dropped
            from the dataset (from ``filenames``, ``labels``, features, ...) and listed in
            :attr:`skipped`, and a warning says how many.
        metadata: the csv under ``meta/`` (default ``esc50.csv``).

    Attributes:
        root: the dataset root (Path). csv: its ``meta/<metadata>``.
        meta: the csv rows of the dataset's clips, in order (index 0..n-1).
        class_names: ``[n_classes]`` names by target (all classes of the csv).
        folds: the requested folds (tuple of int). sample_rate, duration: as given.
        skipped: ``[{"filename": str, "reason": str}]`` of the clips dropped by ``"skip"``
            (empty otherwise), in csv order.

    Raises:
        DatasetError: bad root, metadata (:func:`read_meta`) or folds; a requested fold with no
            clips in the csv (or none left after skipping); a missing clip (named, when decoded).
        AudioFileError: a bad clip, when decoded (``on_bad_clip="error"``).
        ConfigError: unknown ``on_bad_clip``; a non-positive rate or duration.
    """

    def __init__(self, root=None, folds=FOLDS, sample_rate: int = 16000, duration: float = 5.0,
                 on_bad_clip: str = "error", metadata: str | None = None):
        if on_bad_clip not in ON_BAD_CLIP:
            raise ConfigError(f"on_bad_clip must be one of {', '.join(ON_BAD_CLIP)}, got {on_bad_clip!r}")
        try:
            rate_ok = float(sample_rate) == int(sample_rate) and int(sample_rate) > 0
        except (TypeError, ValueError):
            rate_ok = False
        if not rate_ok:
            raise ConfigError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
        try:
            dur_ok = np.isfinite(float(duration)) and float(duration) > 0
        except (TypeError, ValueError):
            dur_ok = False
        if not dur_ok:
            raise ConfigError(f"duration must be a positive number of seconds, got {duration!r}")
        self.metadata = _meta_name(metadata)
        self.root = esc50_root(root, self.metadata)
        self.csv = self.root / "meta" / self.metadata
        meta = read_meta(self.root, self.metadata)
        folds = _check_folds(folds, FOLDS if self.metadata == ESC50_META else None)
        self.class_names = class_names(meta)
        self.meta = meta[meta["fold"].isin(folds)].reset_index(drop=True)
        self.folds = folds
        self.sample_rate = int(sample_rate)
        self.duration = float(duration)
        self.on_bad_clip = on_bad_clip
        self.skipped: list[dict] = []
        self._cache: dict[int, tuple[tuple, torch.Tensor]] = {}
        self._check_no_empty_fold()
        if on_bad_clip == "skip":
            self._drop_bad_clips()

    def _check_no_empty_fold(self):
        present = set(self.meta["fold"].tolist())
        empty = [f for f in self.folds if f not in present]
        if not empty:
            return
        what = f"fold {empty[0]} has" if len(empty) == 1 else f"folds {', '.join(map(str, empty))} have"
        if not self.skipped:
            raise DatasetError(f"{what} no clips in {self.csv}")
        meta = read_meta(self.root, self.metadata)
        lost = set(meta.loc[meta["fold"].isin(empty), "filename"])
        example = next(s["reason"] for s in self.skipped if s["filename"] in lost)
        raise DatasetError(f"{what} no clips left in {self.csv}: all {len(lost)} were bad and skipped "
                           f"(e.g. {example})")

    def _drop_bad_clips(self):
        keep = []
        for i, name in enumerate(self.filenames):
            try:
                self.waveform(i)
            except (AudioFileError, DatasetError) as exc:
                self.skipped.append({"filename": name, "reason": str(exc)})
            else:
                keep.append(i)
        if self.skipped:
            self.meta = self.meta.iloc[keep].reset_index(drop=True)
            self._cache = {new: self._cache[old] for new, old in enumerate(keep)}
            names = ", ".join(s["filename"] for s in self.skipped[:3])
            warnings.warn(f"ESC50: skipped {len(self.skipped)} bad clips of folds {list(self.folds)} "
                          f"(e.g. {names}); see dataset.skipped", stacklevel=3)
            self._check_no_empty_fold()

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def filenames(self) -> list[str]:
        """Official file names (``.wav``, from the csv) in dataset order."""
        return self.meta["filename"].tolist()

    @property
    def labels(self) -> np.ndarray:
        """int64 ``[n_clips]`` class indices."""
        return self.meta["target"].to_numpy(dtype=np.int64)

    def path(self, i: int) -> Path:
        """File of clip ``i`` (wav or flac). Raises DatasetError when it is missing (named)."""
        return resolve_audio(self.root, self.meta["filename"].iloc[i])

    def waveform(self, i: int) -> torch.Tensor:
        """float32 ``[n_samples]`` of clip ``i``, cached after the first read (and re-read if the
        file has changed since). Raises DatasetError (missing) or AudioFileError (bad clip)."""
        path = self.path(i)
        sig = _stat_signature(path)
        hit = self._cache.get(i)
        if hit is None or hit[0] != sig:
            hit = self._cache[i] = (sig, load_clip(path, self.sample_rate, self.duration))
        return hit[1]

    def __getitem__(self, i: int):
        return self.waveform(i), int(self.meta["target"].iloc[i])

    def waveforms(self, indices=None) -> torch.Tensor:
        """float32 ``[n, n_samples]`` of the given clips (all by default)."""
        idx = range(len(self)) if indices is None else indices
        return torch.stack([self.waveform(int(i)) for i in idx])

    @property
    def digests(self) -> list[str]:
        """SHA-256 (64 hex digits) of each clip's file, in dataset order (:func:`file_digest`:
        memoised, so repeated calls on unchanged files cost a ``stat`` per clip).

        Raises:
            DatasetError: a clip file is missing or unreadable (named).
        """
        return [file_digest(resolve_audio(self.root, name)) for name in self.filenames]

    def clip_digest(self, i: int) -> str:
        """The first 16 hex digits of the SHA-256 of clip ``i``'s file (stored per row in the
        results CSVs)."""
        return file_digest(self.path(i))[:16]

    def identity(self) -> dict:
        """What data this is, by content, for run records and cache keys.

        Returns:
            ``{"meta_sha256": SHA-256 hex of meta/esc50.csv, "clips_sha256": :func:`clips_sha256`
            of the dataset's clips (csv file names and file digests, in order), "n_clips": int,
            "folds": [int], "root": str}``. ``root`` is informational: two copies of the same
            files in different folders have equal identities except for it; replacing one
            clip's file changes ``clips_sha256``.

        Raises:
            DatasetError: a clip or the csv is missing or unreadable (named).
        """
        return {"meta_sha256": file_digest(self.csv), "clips_sha256": clips_sha256(self.filenames, self.digests),
                "n_clips": len(self), "folds": list(self.folds), "root": str(self.root)}


# ---------------------------------------------------------------------------------------------
# The content-addressed cache: tensors computed once per content key (clip contents, feature
# configuration, transform code, ...), shared by every process that uses the same cache folder.

#: Version of the cache entry layout; bump it when the entry's fields change.
CACHE_FORMAT = 2
_TRANSFORM_SOURCES = ("processing.py", "audio_io.py")


def code_version(*sources: str) -> str:
    """SHA-256 hex of the source of the named ``audiointerp`` modules (file names relative to the
    package, e.g. ``"noise.py"``, as first read by this process), the torch and torchaudio
    versions included. A cache key that holds it is invalidated by any edit of that code (a
    comment too, which only costs one recomputation).
    """
    return _code_version(tuple(sources))


@lru_cache(maxsize=16)
def _code_version(sources: tuple) -> str:
    import torchaudio

    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in sources:
        h.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    h.update(f"torch {torch.__version__}\0torchaudio {torchaudio.__version__}".encode())
    return h.hexdigest()


@lru_cache(maxsize=1)
def transform_version() -> str:
    """SHA-256 hex of the code that turns files into features: :func:`code_version` of
    ``audiointerp/processing.py`` and ``audiointerp/audio_io.py`` (with the torch and torchaudio
    versions: their resampling and STFT/mel numerics).

    Hashing the source rather than keeping a hand-bumped constant cannot be forgotten: any
    edit of the transforms invalidates the cached features.
    """
    return code_version(*_TRANSFORM_SOURCES)


def content_key(payload: dict) -> str:
    """SHA-256 hex of ``payload`` as canonical JSON (sorted keys; :data:`CACHE_FORMAT` added):
    the key of a :func:`cached_tensor` entry. Values must be JSON-able (str, numbers, lists,
    dicts, None)."""
    return hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **payload}, sort_keys=True).encode()).hexdigest()


def feature_cache_key(dataset: ESC50, cfg, digests: list[str] | None = None) -> str:
    """The content key (SHA-256 hex) of ``dataset``'s features under ``cfg``.

    Hashes, as canonical JSON: :data:`CACHE_FORMAT`, :func:`clips_sha256` of the clips (names
    and file digests), ``cfg.to_dict()``, the dataset's rate and duration, and
    :func:`transform_version`. The root folder is not part of it, so a copy of the data
    elsewhere shares the entry, and a changed clip does not.

    Args:
        digests: the clips' digests if already computed (``dataset.digests`` otherwise).
    """
    digests = dataset.digests if digests is None else digests
    payload = {"format": CACHE_FORMAT, "clips_sha256": clips_sha256(dataset.filenames, digests),
               "features": cfg.to_dict(), "sample_rate": dataset.sample_rate, "duration": dataset.duration,
               "transform": transform_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _load_entry(path: Path, key: str, expect: dict, shape: tuple, field: str = "features") -> torch.Tensor | None:
    """The tensor of a cache entry that matches, else None (missing, unreadable, corrupt, for
    another key, or with other ``expect`` fields, e.g. other clips)."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated, garbage, or an older layout: recompute
        return None
    if not (isinstance(entry, dict) and entry.get("format") == CACHE_FORMAT and entry.get("key") == key
            and all(entry.get(k) == v for k, v in expect.items())):
        return None
    value = entry.get(field)
    if not (isinstance(value, torch.Tensor) and value.dtype == torch.float32 and tuple(value.shape) == tuple(shape)
            and bool(torch.isfinite(value).all())):
        return None
    return value


def _save_entry(path: Path, entry: dict) -> None:
    """Write ``entry`` atomically: a temporary file in the same folder, then ``os.replace``
    (the file gets the usual permissions of the umask, unlike a ``mkstemp`` file)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            torch.save(entry, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def cached_tensor(name: str, key: str, compute, shape: tuple, expect: dict | None = None,
                  extra: dict | None = None, field: str = "features") -> torch.Tensor:
    """A float32 tensor computed once per content key and kept in the on-disk cache.

    The entry ``<cache_dir>/<name>-<key[:32]>.pt`` holds ``{"format": CACHE_FORMAT, "key": key,
    **expect, **extra, field: tensor}``. On load it must match the key, every ``expect`` field
    (e.g. the clips' names and digests), the ``shape``, be float32 and finite; anything else
    (missing, truncated, tampered, from older code) is recomputed. A miss is computed under a
    ``filelock.FileLock`` per entry, after a second look, so concurrent processes (the grid's
    workers, a run beside them) compute an entry once: the others wait, then read it. Writes are
    atomic (temporary file, fsync, ``os.replace``): a reader never sees half an entry, and a
    writer killed mid-write leaves only a temporary file. When the folder cannot be locked or
    written, the tensor is computed (and returned) without caching, with a warning.

    Args:
        name: the entry's file name prefix, e.g. ``features-mel`` (no key in it).
        key: its content key (:func:`content_key` or :func:`feature_cache_key`: SHA-256 hex).
        compute: ``() -> torch.Tensor`` float32 of ``shape``; its exceptions propagate and
            nothing is cached.
        shape: the expected shape.
        expect: fields stored with the entry and checked on load.
        extra: informational fields stored with the entry (not checked).
        field: the entry's field holding the tensor.

    Returns:
        the tensor (float32, ``shape``, on the CPU).

    Raises:
        ConfigError: the cache folder (:func:`audiointerp.settings.cache_dir`,
            ``AUDIOINTERP_CACHE``) cannot be created.
        whatever ``compute`` raises.
    """
    from filelock import FileLock

    expect = dict(expect or {})
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the feature cache folder {folder} ({exc.strerror or exc}): set "
                          f"AUDIOINTERP_CACHE to a writable folder, or pass cache=False") from None
    path = folder / f"{name}-{key[:32]}.pt"
    value = _load_entry(path, key, expect, shape, field)
    if value is not None:
        return value
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire()
    except OSError as exc:  # e.g. a read-only cache folder: compute, without caching
        warnings.warn(f"cannot lock the cache entry {path} ({exc}); computing without the cache", stacklevel=3)
        return compute()
    with contextlib.ExitStack() as stack:
        stack.callback(lock.release)
        value = _load_entry(path, key, expect, shape, field)  # another process may have written it
        if value is not None:
            return value
        value = compute()
        try:
            _save_entry(path, {"format": CACHE_FORMAT, "key": key, **expect, **(extra or {}), field: value})
        except OSError as exc:
            warnings.warn(f"could not write the cache entry {path}: {exc}", stacklevel=3)
    return value


# ---------------------------------------------------------------------------------------------
# Features of whole folds, computed once per (clip contents, feature config).

def _compute_features(dataset: ESC50, cfg, batch_size: int, progress: bool, transform=None) -> torch.Tensor:
    from tqdm.auto import tqdm

    from . import processing

    out = []
    starts = range(0, len(dataset), batch_size)
    for s in tqdm(starts, desc=f"{cfg.kind} features", disable=not progress):
        idx = list(range(s, min(s + batch_size, len(dataset))))
        wav = dataset.waveforms(idx)
        if transform is not None:
            wav = transform(wav, idx)
        out.append(processing.features(wav, cfg)[0])
    return torch.cat(out) if out else torch.empty(0, *cfg.shape)


def _check_batch(dataset: ESC50, cfg, batch_size) -> None:
    if int(cfg.sample_rate) != dataset.sample_rate or float(cfg.duration) != dataset.duration:
        raise ConfigError(f"features at {cfg.sample_rate} Hz / {cfg.duration} s cannot use clips loaded at "
                          f"{dataset.sample_rate} Hz / {dataset.duration} s")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def _cached_clip_features(dataset: ESC50, cfg, batch_size: int, progress: bool, name: str, key: str,
                          digests: list[str], transform=None, extra: dict | None = None) -> torch.Tensor:
    """Features of ``dataset`` (each batch of waveforms through ``transform`` first) in the
    content-addressed cache entry ``name``/``key``, verified against the clips' names and digests;
    clips that change on disk while being read are refused (nothing cached)."""
    filenames = dataset.filenames

    def compute():
        feats = _compute_features(dataset, cfg, int(batch_size), progress, transform)
        changed = [n for n, a, b in zip(filenames, digests, dataset.digests) if a != b]
        if changed:
            raise DatasetError(f"{len(changed)} clips of {dataset.root} changed on disk while their features were "
                               f"computed (e.g. {', '.join(changed[:3])}); nothing was cached, run again")
        return feats

    return cached_tensor(name, key, compute, (len(filenames), *cfg.shape),
                         expect={"filenames": filenames, "digests": digests},
                         extra={"features_config": cfg.to_dict(), **(extra or {})})


def fold_features(dataset: ESC50, cfg, batch_size: int = 64, cache: bool = True,
                  progress: bool = False) -> torch.Tensor:
    """Features of every clip of ``dataset``, cached on disk by content.

    The cache entry ``<cache_dir>/features-<kind>-<key>.pt`` (:func:`cached_tensor`) is keyed by
    :func:`feature_cache_key` (the clips' names and SHA-256 digests, the feature config, rate,
    duration and :func:`transform_version`), so a changed clip is recomputed and a copy of the
    data in another folder reuses the entry. The entry stores the file names and digests and
    is verified on load; an unreadable or mismatching entry is recomputed. Writes are atomic
    (temporary file + ``os.replace``) and made under a ``filelock.FileLock`` per key, so
    concurrent processes compute an entry once (the others wait, then read it). If the clips
    change on disk while being read, nothing is cached and DatasetError is raised.

    Args:
        dataset: the clips.
        cfg: :class:`audiointerp.processing.FeatureConfig` (its rate and duration must be the
            dataset's).
        batch_size: clips per feature batch (> 0).
        cache: read/write the on-disk cache (:func:`audiointerp.settings.cache_dir`, i.e.
            ``AUDIOINTERP_CACHE``).
        progress: show a progress bar while computing.

    Returns:
        float32 ``[n_clips, 1, n_freq, n_frames]`` in dB (:func:`audiointerp.processing.features`).

    Raises:
        ConfigError: the feature rate or duration differs from the dataset's (both quoted); a
            bad ``batch_size``; a cache folder that cannot be created.
        DatasetError: a missing clip (named), or clips changed while computing (named).
        AudioFileError: a bad clip (named).
    """
    _check_batch(dataset, cfg, batch_size)
    if not cache:
        return _compute_features(dataset, cfg, int(batch_size), progress)
    digests = dataset.digests
    return _cached_clip_features(dataset, cfg, batch_size, progress, f"features-{cfg.kind}",
                                 feature_cache_key(dataset, cfg, digests), digests)


def mixed_features(dataset: ESC50, cfg, noise, batch_size: int = 64, cache: bool = True,
                   progress: bool = False) -> torch.Tensor:
    """Features of every clip of ``dataset`` with a condition's background noise mixed in
    (:meth:`audiointerp.noise.NoiseSpec.apply`), cached on disk by content like
    :func:`fold_features`. For ``mixture`` the "noise" of each clip is its partner clip of the
    same dataset (:func:`audiointerp.noise.mixture_partners`, seeded by ``noise.seed``).

    The entry ``<cache_dir>/noisy-<kind>-<key>.pt`` is keyed by the clips' identity
    (:func:`clips_sha256` of names and file digests), the noise file's SHA-256 (``mixture``: the
    partners' names), the mixing weight alpha actually used (from alpha or the SNR), the noise offset, the feature configuration,
    rate and duration, :func:`transform_version` and the source of ``noise.py`` (the mixing
    code); the condition's name is not part of it (the same file under another name shares the
    entry). Concurrency, atomic writes and verification: :func:`cached_tensor`.

    Args:
        dataset: the clips; cfg: their :class:`~audiointerp.processing.FeatureConfig`.
        noise: a noisy :class:`audiointerp.noise.NoiseSpec` (``clean``: use :func:`fold_features`).
        batch_size: clips per batch (> 0); cache: use the on-disk cache; progress: a progress bar.

    Returns:
        float32 ``[n_clips, 1, n_freq, n_frames]`` in dB.

    Raises:
        ConfigError: a clean condition; bad noise parameters or file (named); rate/duration
            mismatch; bad ``batch_size``.
        DatasetError / AudioFileError: as :func:`fold_features`.
    """
    if noise.is_clean:
        raise ConfigError("mixed_features is for noisy conditions; clean features come from fold_features")
    _check_batch(dataset, cfg, batch_size)

    partners = None
    if noise.is_mixture:  # SpeechBrain's protocol: each clip mixed with a seeded clip of another class
        from .noise import mixture_partners

        partners = mixture_partners(dataset.labels, noise.seed)

    def transform(wav, idx):
        if partners is None:
            return noise.apply(wav, cfg.sample_rate)
        return noise.apply(wav, cfg.sample_rate, partners=dataset.waveforms(partners[idx]))

    if not cache:
        return _compute_features(dataset, cfg, int(batch_size), progress, transform)
    described = noise.describe()
    digests = dataset.digests
    key = content_key({"kind": "noisy-features", "clips_sha256": clips_sha256(dataset.filenames, digests),
                       "noise_sha256": described["sha256"], "alpha": described["alpha_used"],
                       "offset": float(described["offset"]), "features": cfg.to_dict(),
                       "partners": None if partners is None else [dataset.filenames[int(i)] for i in partners],
                       "sample_rate": dataset.sample_rate, "duration": dataset.duration,
                       "transform": transform_version(), "mixing": code_version("noise.py")})
    return _cached_clip_features(dataset, cfg, batch_size, progress, f"noisy-{cfg.kind}", key, digests, transform,
                                 extra={"noise": {k: described[k] for k in ("label", "sha256", "alpha_used", "offset")}})


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
