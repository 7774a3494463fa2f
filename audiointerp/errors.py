"""Errors raised by audiointerp.

Every error that a user can cause (bad path, bad name, mismatched checkpoint) is raised as
one of these classes with a message that names the offending file, parameter or value, so
the command line can print a single clear line instead of a deep traceback.
"""

from __future__ import annotations


class AudioInterpError(Exception):
    """Base class of all user-facing errors of audiointerp."""


class DatasetError(AudioInterpError, FileNotFoundError):
    """The dataset root is unset, wrong, or a clip is missing/corrupt/empty."""


class AudioFileError(AudioInterpError, ValueError):
    """An audio file could not be read (missing, corrupt or empty); names the file."""


class ConfigError(AudioInterpError, ValueError):
    """An unknown name (method, mask, condition, feature kind) or an invalid parameter value."""


class CheckpointError(AudioInterpError, ValueError):
    """A checkpoint is missing, not an audiointerp checkpoint, or does not match its features."""


class ResultsError(AudioInterpError, ValueError):
    """A results folder holds a run with another configuration (nothing is overwritten)."""


def unknown_name(kind: str, value: str, valid) -> ConfigError:
    """Build the error for an unknown ``kind`` name ``value``, listing the ``valid`` names."""
    return ConfigError(f"unknown {kind} {value!r}; valid {kind}s: {', '.join(sorted(valid))}")
