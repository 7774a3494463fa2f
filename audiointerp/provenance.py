"""Provenance of what we write: package versions, the git commit, file digests.

Recorded in classifier and interpreter checkpoints, run folders (``run.json``) and noise
descriptions, so every result says which code, packages and input files made it.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
from pathlib import Path


def package_versions() -> dict:
    """Versions of the packages that shape results (python, torch, torchaudio, numpy, ...)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("audiointerp", "torch", "torchaudio", "numpy", "captum", "shap", "librosa", "soundfile", "pandas"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def git_commit() -> str:
    """The repository's HEAD commit (with ``-dirty`` if modified), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head + ("-dirty" if dirty else "")) or "unknown"
    except Exception:
        return "unknown"


_DIGESTS: dict[str, tuple[tuple, str]] = {}
_DIGESTS_LOCK = threading.Lock()


def _signature(path: Path) -> tuple:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def file_sha256(path) -> str:
    """SHA-256 hex digest (64 lowercase hex digits) of a file's bytes.

    Memoised in memory per resolved path and (size, mtime_ns, inode, ctime_ns): hashing an
    unchanged file again costs one ``stat``, a replaced or rewritten file is hashed afresh (a
    file rewritten in place with the same size within the file system's timestamp granularity,
    a few ms, is not noticed by a running process).

    Raises:
        OSError: the file is missing or unreadable.
    """
    p = Path(path).resolve()
    sig = _signature(p)
    key = str(p)
    with _DIGESTS_LOCK:
        hit = _DIGESTS.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _DIGESTS_LOCK:
        _DIGESTS[key] = (sig, digest)  # the signature from before reading: a change while hashing re-hashes
    return digest
