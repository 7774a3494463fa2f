"""Reading and writing the per-clip result logs, with one set of rules for the runner and the tables.

A run folder ``<results>/<model>/<method>_<condition>/`` holds ``run.json`` (configuration,
dataset identity, provenance, timings) and ``csvs/<mask>.csv``, one row per (clip, domain) with
the columns :data:`CSV_COLUMNS`. The runner appends rows as clips finish (crash-safe: flushed and
fsynced), the tables read them. Both read through :func:`read_log`, so the same rules apply on
resume and in a table:

* a missing, 0-byte or header-only file holds no rows;
* the header must be :data:`CSV_COLUMNS` (or :data:`LEGACY_COLUMNS`, written before clips carried
  their digest);
* a last line without its newline is a write that a crash cut short (a *torn* line): it is
  dropped and counted;
* any other malformed line (wrong number of fields, a non-numeric value in a numeric column, an
  empty file name or domain) is an error that names the file, the line and the value: nothing is
  guessed;
* a second row for the same (clip, domain) is a duplicate: the first is kept, the rest counted.

Writes go through :func:`write_log` (atomic: temporary file, then rename) and
:func:`append_log` (append, flush, fsync); an ``OSError`` (read-only folder, full disk, a file
where a folder should be) becomes one :class:`~audiointerp.errors.ResultsError` naming the path.

:func:`run_lock` makes one process the only writer of a run folder (``filelock``: an OS file
lock, released by the kernel when the holder dies); a second writer gets an error naming the
holder.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ResultsError
from .metrics import METRIC_NAMES

#: The columns of a results CSV: the clip's index in its fold (``sample``, also its seed), its
#: official file name, the first 16 hex digits of its file's SHA-256 (``clip_digest``), its label,
#: the prediction, whether it is correct, the scoring domain, the reconstruction SNR (dB) and the
#: seven metrics of :mod:`audiointerp.metrics`.
CSV_COLUMNS = ["sample", "filename", "clip_digest", "label", "pred", "is_correct", "domain", "recon_snr_db",
               *METRIC_NAMES]
#: The columns of CSVs written before rows carried the clip digest (still read by the tables).
LEGACY_COLUMNS = [c for c in CSV_COLUMNS if c != "clip_digest"]
#: The columns of CSVs written before the scoring domain and the reconstruction SNR were logged
#: (spectrogram domain only). Only :func:`read_any_log` (the tables) accepts them.
OLD_COLUMNS = [c for c in LEGACY_COLUMNS if c not in ("domain", "recon_snr_db")]
INT_COLUMNS = ("sample", "label", "pred", "is_correct")
FLOAT_COLUMNS = ("recon_snr_db", *METRIC_NAMES)
LOCK_NAME = ".lock"
OWNER_NAME = ".lock-owner.json"


@dataclass
class LogRead:
    """What :func:`read_log` found in one results CSV.

    Attributes:
        path: the file.
        rows: the valid rows in file order, each a dict of the file's columns (values as written,
            strings), duplicates removed.
        columns: the header (None when the file is missing or empty).
        torn: 1 when the last line was cut short (dropped), else 0.
        duplicates: rows dropped because their (filename, domain) came earlier in the file.
    """

    path: Path
    rows: list = field(default_factory=list)
    columns: list | None = None
    torn: int = 0
    duplicates: int = 0

    @property
    def legacy(self) -> bool:
        """True for a CSV without the ``clip_digest`` column."""
        return self.columns == LEGACY_COLUMNS

    @property
    def clean(self) -> bool:
        """True when the file needs no repair (nothing torn, no duplicate)."""
        return not self.torn and not self.duplicates


def _bad(path: Path, line: int, what: str) -> ResultsError:
    return ResultsError(f"{path}, line {line}: {what}; fix or delete that line (or move the file away) and run again")


def read_log(path: str | os.PathLike) -> LogRead:
    """Read one results CSV with the rules of the module docstring.

    Args:
        path: a ``csvs/<mask>.csv`` file.

    Returns:
        a :class:`LogRead`.

    Raises:
        ResultsError: unreadable file, unknown header, or a malformed line that is not the last
            one (file, line number and value named).
    """
    return _read(path, (CSV_COLUMNS, LEGACY_COLUMNS))


def read_any_log(path: str | os.PathLike) -> LogRead:
    """:func:`read_log` that also accepts the pre-domain header :data:`OLD_COLUMNS` (for the tables).

    Rows of such a file get ``domain`` = ``spectrogram`` and ``recon_snr_db`` = ``nan`` (their
    ``columns`` stay the file's header); every other rule is :func:`read_log`'s.

    Raises:
        ResultsError: see :func:`read_log`.
    """
    return _read(path, (CSV_COLUMNS, LEGACY_COLUMNS, OLD_COLUMNS))


def _read(path: str | os.PathLike, headers: tuple) -> LogRead:
    """The body of :func:`read_log`, accepting any header in ``headers``."""
    path = Path(path)
    out = LogRead(path)
    if not path.is_file():
        return out
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"cannot read results file {path}: {exc}") from None
    if not text:
        return out
    if not text.endswith("\n"):  # a crash cut the last write short
        cut = text.rfind("\n") + 1
        out.torn = int(bool(text[cut:].strip()))
        text = text[:cut]
    lines = text.splitlines()
    if not lines:
        return out
    header = next(csv.reader([lines[0]]))
    if header not in headers:
        raise ResultsError(f"{path} has columns {header}, expected {CSV_COLUMNS}; it was not written by "
                           f"audiointerp's runner: move it away to start afresh")
    out.columns = header
    width = len(header)
    records, linenos = [], []
    for lineno, rec in enumerate(csv.reader(lines[1:]), start=2):
        if not rec:
            continue
        if len(rec) != width:
            raise _bad(path, lineno, f"{len(rec)} fields, expected {width}")
        records.append(rec)
        linenos.append(lineno)
    _check_numbers(path, header, records, linenos)
    fi, di = header.index("filename"), header.index("domain") if "domain" in header else None
    seen = set()
    for lineno, rec in zip(linenos, records):
        row = dict(zip(header, rec))
        if header == OLD_COLUMNS:
            row.update(domain="spectrogram", recon_snr_db="nan")
        if not rec[fi] or (di is not None and not rec[di]):
            raise _bad(path, lineno, "empty filename or domain")
        key = (row["filename"], row["domain"])
        if key in seen:
            out.duplicates += 1
            continue
        seen.add(key)
        out.rows.append(row)
    return out


def _check_numbers(path: Path, header: list, records: list, linenos: list) -> None:
    """Every integer / numeric column parses (vectorised; on a failure, the first bad line is named)."""
    import numpy as np

    for col in (*INT_COLUMNS, *FLOAT_COLUMNS):
        if col not in header or not records:
            continue
        j = header.index(col)
        values = [r[j] for r in records]
        try:
            arr = np.asarray(values, dtype=np.float64)
            ok = col not in INT_COLUMNS or bool(np.all(arr == np.round(arr)))
        except ValueError:
            ok = False
        if ok:
            continue
        kind = "an integer" if col in INT_COLUMNS else "a number"
        for lineno, v in zip(linenos, values):
            try:
                int(v) if col in INT_COLUMNS else float(v)
            except ValueError:
                raise _bad(path, lineno, f"{col} = {v!r} is not {kind}") from None


def log_frame(path: str | os.PathLike):
    """A results CSV as a typed pandas DataFrame (the rows :func:`read_log` keeps).

    Integer columns are int64, metric columns float64, ``clip_digest`` a string (empty for
    legacy files). Columns in :data:`CSV_COLUMNS` order.

    Raises:
        ResultsError: see :func:`read_log`.
    """
    return log_dataframe(read_log(path))


def log_dataframe(log: LogRead):
    """The rows of a :class:`LogRead` as a DataFrame, typed and ordered as by :func:`log_frame`.

    For a caller that also wants the read's ``torn``/``duplicates`` counts (one parse). Rows of an
    :data:`OLD_COLUMNS` file get ``domain`` ``spectrogram`` and ``recon_snr_db`` NaN.
    """
    import pandas as pd

    df = pd.DataFrame(log.rows, columns=log.columns or CSV_COLUMNS)
    for col, fill in (("domain", "spectrogram"), ("recon_snr_db", "nan")):  # OLD_COLUMNS files
        if col not in df:
            df[col] = fill
    if "clip_digest" not in df:
        df.insert(CSV_COLUMNS.index("clip_digest"), "clip_digest", "")
    for col in INT_COLUMNS:
        df[col] = df[col].astype("int64")
    for col in FLOAT_COLUMNS:
        df[col] = df[col].astype("float64")
    return df[CSV_COLUMNS]


def fmt_number(v) -> str:
    """A metric as written to the logs: 6 significant digits (``nan`` for NaN)."""
    v = float(v)
    return "nan" if math.isnan(v) else f"{v:.6g}"


def rows_text(rows: list[dict], header: bool = True) -> str:
    """CSV text of ``rows`` (dicts over :data:`CSV_COLUMNS`), ``\\n`` line ends."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n", extrasaction="raise")
    if header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


@contextmanager
def writing(path: str | os.PathLike, action: str = "write"):
    """Turn an ``OSError`` inside the block into one :class:`ResultsError` naming ``path``."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ResultsError(f"cannot {action} {path}: {reason} (what was already written is kept)") from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename).

    Raises:
        ResultsError: the folder is not writable, the disk is full, ... (path named).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise


def write_log(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write a whole results CSV atomically (header plus ``rows``).

    Raises:
        ResultsError: see :func:`write_text_atomic`.
    """
    write_text_atomic(path, rows_text(rows))


def append_log(path: str | os.PathLike, rows: list[dict]) -> None:
    """Append ``rows`` to a results CSV (writing the header first if the file is new or empty),
    then flush and fsync. A crash mid-write leaves at most a torn last line, which
    :func:`read_log` drops.

    Raises:
        ResultsError: see :func:`write_text_atomic`.
    """
    path = Path(path)
    with writing(path, "append to"):
        new = not path.is_file() or path.stat().st_size == 0
        with open(path, "a", newline="", encoding="utf-8") as f:
            f.write(rows_text(rows, header=new))
            f.flush()
            os.fsync(f.fileno())


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object file such as ``run.json``; ``{}`` when the file does not exist.

    Raises:
        ResultsError: the file is not valid JSON (e.g. torn) or not an object (named).
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ResultsError(f"{path} is damaged ({exc}); its CSVs are kept: restore it, or move the run folder "
                           f"away to start afresh") from None
    if not isinstance(obj, dict):
        raise ResultsError(f"{path} holds a {type(obj).__name__}, not a JSON object")
    return obj


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """Write ``obj`` as indented JSON, atomically (non-JSON values via ``str``).

    Raises:
        ResultsError: see :func:`write_text_atomic`.
    """
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def make_folder(path: str | os.PathLike) -> Path:
    """Create a results folder (and its parents) and check that it can be written to.

    Raises:
        ResultsError: a file stands where a folder should be, or the folder cannot be created or
            written to (the path and the reason are named).
    """
    path = Path(path)
    with writing(path, "create results folder"):
        path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise ResultsError(f"cannot write to results folder {path}: permission denied (choose another --results)")
    return path


@contextmanager
def run_lock(folder: str | os.PathLike):
    """Hold the writer lock of a run folder for the duration of the block.

    The lock is an OS file lock (``filelock.FileLock`` on ``<folder>/.lock``; the kernel releases
    it when the holder exits or is killed). The holder records its host, process id, start time
    and command line in ``<folder>/.lock-owner.json`` so that a refused writer can name it.

    Raises:
        ResultsError: another process holds the lock (its host, pid and start time are named), or
            the folder cannot be written to.
    """

    from filelock import FileLock, Timeout

    folder = make_folder(folder)
    lock = FileLock(str(folder / LOCK_NAME), timeout=0)
    try:
        try:
            lock.acquire()
        except Timeout:
            raise
        except OSError as exc:
            raise ResultsError(f"cannot lock {folder / LOCK_NAME}: {exc.strerror or exc}") from None
    except Timeout:
        owner = {}
        try:
            owner = json.loads((folder / OWNER_NAME).read_text())
        except (OSError, ValueError):
            pass
        who = (f"process {owner.get('pid', '?')} on {owner.get('host', '?')} since {owner.get('started', '?')} "
               f"({owner.get('command', '?')})") if owner else "another process"
        raise ResultsError(f"{folder} is being written by {who}; one writer per run folder: wait for it to finish "
                           f"or pass another --results") from None
    try:
        write_json(folder / OWNER_NAME, {"host": socket.gethostname(), "pid": os.getpid(),
                                         "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                         "command": " ".join(sys.argv)[:300]})
        yield folder
    finally:
        try:
            (folder / OWNER_NAME).unlink(missing_ok=True)
        except OSError:
            pass
        lock.release()
