"""Provenance of what we write: package versions, the git commit, file digests.

Recorded in classifier and interpreter checkpoints, run folders (``run.json``) and noise
descriptions, so every result says which code, packages and input files made it.
"""

from __future__ import annotations

import hashlib
import subprocess
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


def file_sha256(path) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
