"""The environment variables audiointerp reads, and the one place that reads them.

Every module that needs a setting from the environment asks this module, so the list below
is complete: a command line can print it (:func:`environment_help`) and a test can set it.

* ``ESC50_ROOT``: the ESC-50 dataset root, the folder holding ``meta/esc50.csv`` and
  ``audio/`` (read by :func:`audiointerp.data.esc50_root` when no root is given).
* ``AUDIOINTERP_NOISES``: the folder of the Freesound noise files of the ``white``, ``room``
  and ``horse`` listening conditions (:func:`audiointerp.noise.noise_dir`).
* ``AUDIOINTERP_CACHE``: the folder for cached features (:func:`audiointerp.data.fold_features`)
  and, when the repository is not writable, the generated noises; default
  ``~/.cache/audiointerp``.

An unset variable and one set to the empty string (or only blanks) are treated alike: unset.
Values are read at every call, never at import, so a change of the environment takes effect.
"""

from __future__ import annotations

import os
from pathlib import Path

#: ``{name: one-line description}`` of every environment variable audiointerp reads.
ENVIRONMENT = {
    "ESC50_ROOT": "ESC-50 dataset root: the folder holding meta/esc50.csv and audio/",
    "AUDIOINTERP_NOISES": "folder of the Freesound noises of the white, room and horse conditions",
    "AUDIOINTERP_CACHE": "folder for cached features and generated noises (default ~/.cache/audiointerp)",
}

#: The cache folder used when ``AUDIOINTERP_CACHE`` is unset (``~`` expanded at each call).
DEFAULT_CACHE = "~/.cache/audiointerp"


def env(name: str) -> str | None:
    """The value of environment variable ``name``, or None when unset or blank.

    Args:
        name: one of :data:`ENVIRONMENT`.

    Returns:
        the value as set (str, not stripped), or None.

    Raises:
        KeyError: ``name`` is not a variable audiointerp reads (a programming error: add it
            to :data:`ENVIRONMENT` first, so that :func:`environment_help` lists it).
    """
    if name not in ENVIRONMENT:
        raise KeyError(f"{name} is not one of the environment variables audiointerp reads: "
                       f"{', '.join(ENVIRONMENT)}")
    value = os.environ.get(name)
    return value if value and value.strip() else None


def esc50_root_env() -> str | None:
    """``ESC50_ROOT`` (the ESC-50 root folder as a string), or None when unset or blank."""
    return env("ESC50_ROOT")


def noises_env() -> str | None:
    """``AUDIOINTERP_NOISES`` (the Freesound noise folder as a string), or None when unset or blank."""
    return env("AUDIOINTERP_NOISES")


def cache_dir() -> Path:
    """Folder for cached features: ``AUDIOINTERP_CACHE``, or ``~/.cache/audiointerp`` when unset.

    Returns:
        the folder as a Path with ``~`` expanded; it need not exist yet (writers create it).
    """
    return Path(env("AUDIOINTERP_CACHE") or DEFAULT_CACHE).expanduser()


def environment_help() -> str:
    """A few lines for a command line's ``--help`` epilog: each variable, what it is, its value.

    Returns:
        text such as::

            environment variables:
              ESC50_ROOT          ESC-50 dataset root: ... (now: /data/ESC-50)
              AUDIOINTERP_NOISES  folder of the Freesound noises ... (now: unset)
              ...
    """
    width = max(len(n) for n in ENVIRONMENT)
    lines = ["environment variables:"]
    for name, what in ENVIRONMENT.items():
        value = env(name)
        lines.append(f"  {name:<{width}}  {what} (now: {value if value is not None else 'unset'})")
    return "\n".join(lines)
