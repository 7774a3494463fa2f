"""The experiment grid on Dask: (model × condition × method × shard of clips) tasks, sharded,
resumable, fault-tolerant, with the numbers of the sequential :func:`audiointerp.runner.run`.

A grid is a list of cells ``CHECKPOINT:CONDITION`` times the methods; each (cell, method) is one
run folder ``<results>/<model>/<method>_<condition>/``, as :func:`~audiointerp.runner.run` writes
it. :func:`run_grid` splits the work into tasks and runs them on a Dask distributed cluster
(a ``LocalCluster`` of single-threaded worker processes, or any running scheduler):

* **Preparation, once per (checkpoint, condition).** One task computes the condition's features
  (content-addressed on-disk cache, :func:`audiointerp.scoring.condition_features`) and the class
  probabilities of the fold; every shard task of that pair receives the probabilities (a few
  kB) instead of recomputing them. SHAP's background is a content-addressed cache entry too
  (:meth:`audiointerp.runner.RunContext.shap_background`). Cache entries are written atomically
  under a per-entry file lock: concurrent workers compute one entry once.
* **Shard tasks.** A shard is up to ``shard`` clips of one run folder that miss the same masks
  (:func:`audiointerp.runner.clip_groups`), in fold order; ``shard`` is a multiple of the
  runner's ``chunk``, so every batch holds the clips the sequential run batches together. A task
  computes its clips with the runner's own compute path (:func:`audiointerp.runner.score_clips`)
  into ``<run folder>/shards/.tmp-<name>-<random>/`` (rows of every mask, attribution maps,
  audio examples, ``shard.json`` last) and commits it with one ``rename`` to
  ``shards/<first>-<last>-<digest>/``. The name is a digest of the configuration key, masks,
  chunk and the clips' names and digests, so a retry (a worker died; Dask reruns the task) finds
  the shard done, and a half-written temporary folder is never read.
* **Assembly.** When every shard of a run folder is done, the driver appends the shards' rows to
  the mask CSVs in clip order (each CSV written atomically; ``shards/assembling.json`` journals
  the assembly so an interrupted one is completed by the next run), moves the attribution maps
  and audio into place and writes ``run.json``, then removes the shards.

The runner's guarantees hold. The driver holds each unfinished run folder's writer lock
(:func:`audiointerp.results_io.run_lock`) from planning to assembly (workers write only their own
shard folders), checks its run.json against the configuration key and the dataset identity
before planning, repairs and resumes its CSVs per mask like ``run``, and never writes into a
finished folder (recognised read-only). The same cells computed by ``run`` at the same torch
thread count give byte-identical CSVs and attribution maps (``tests/test_grid.py``).

Faults: a worker that dies costs its task only (Dask reschedules it; the commit-by-rename makes
the retry safe). A task that fails on bad input (a NaN clip under ``on_bad_clip="error"``)
reports one line naming the run folder, the shard's clips and the file; the other tasks finish,
their run folders are assembled, and the failed shards' folders wait for a run after the input
is fixed (:class:`GridError`, exit status 2 on the command line). Measured costs and the
projection to more workers: ``docs/grid.md`` and ``scripts/grid_benchmark.py``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from . import settings
from .config import csv_list, option, optional
from .devices import cpu_model
from .errors import AudioInterpError, ConfigError, ResultsError
from .results_io import (
    CSV_COLUMNS,
    make_folder,
    read_json,
    rows_text,
    run_lock,
    write_json,
    write_text_atomic,
    writing,
)
from .runner import RunConfig, RunContext, clip_groups, missing_clips, score_clips, timing_record

#: The grid of ``make reproduce``: the mel model under four conditions, the STFT model clean.
DEFAULT_CELLS = ("weights/compact_mel.pt:clean", "weights/compact_mel.pt:white", "weights/compact_mel.pt:room",
                 "weights/compact_mel.pt:horse", "weights/compact_stft.pt:clean")
#: Clips per task (docs/grid.md: the per-task overhead is under 2 % of a task's time from 8 clips on).
DEFAULT_SHARD = 16
SHARDS = "shards"
JOURNAL = "assembling.json"
SHARD_FORMAT = "audiointerp-shard/1"
#: Relative cost of a clip per method (the grid's measured seconds per clip over Saliency's, 2-core
#: CPU, docs/grid.md): longer tasks are scheduled first. LIME's cost grows with its samples, see
#: :func:`method_weight`.
METHOD_WEIGHT = {"saliency": 1.0, "gradcam": 1.0, "shap": 2.7, "piq": 1.3, "l2i": 1.3, "lmac": 1.1, "lmac_ft": 1.1}


def method_weight(method: str, lime_nsamples: int = 300) -> float:
    """Relative cost of one clip of ``method`` (Saliency = 1), the priority of its shard tasks.

    LIME costs about 0.9 s + 10.8 ms per sample per clip on the 2-core CPU (4.05 s at 300
    samples, 11.6 s at 1000, docs/grid.md), i.e. ``1 + lime_nsamples / 85`` Saliency clips; any
    other method not in :data:`METHOD_WEIGHT` (a captum class) counts as 1.
    """
    if method == "lime":
        return 1.0 + lime_nsamples / 85.0
    return METHOD_WEIGHT.get(method, 1.0)


class GridError(AudioInterpError):
    """Some grid tasks failed (each named with its run folder, shard and file); the rest finished."""


@dataclass
class GridConfig(RunConfig):
    """What :func:`run_grid` computes: every field of :class:`audiointerp.runner.RunConfig` (they
    apply to every cell), except ``checkpoint`` and ``condition``, which come from ``cells``, plus
    where and how finely the grid runs. The command line (``python -m audiointerp grid``) and
    ``notebooks/grid.ipynb`` are derived from these fields.

    Attributes:
        cells: ``CHECKPOINT:CONDITION`` entries (a list or a comma-separated string); a
            checkpoint alone means ``clean``. Each cell times each method is a run folder.
        shard: clips per task, a multiple of ``chunk`` (the grid's batches are then the
            sequential run's).
        scheduler: ``local`` (a ``LocalCluster`` on this machine: one single-threaded worker
            process per core) or the address of a running Dask scheduler (``tcp://host:8786``).
        workers: the local cluster's worker processes (None: one per core); only with ``local``.
        torch_threads: torch intra-op threads per task (1: one core per worker process).
    """

    checkpoint: str = option("", cli=False, help="not used by the grid: see cells")
    condition: str = option("clean", cli=False, help="not used by the grid: see cells")
    cells: list = option(default_factory=lambda: list(DEFAULT_CELLS), parse=csv_list, metavar="CKPT:COND,...",
                         help="the grid's cells, CHECKPOINT:CONDITION comma-separated (a checkpoint alone: clean)")
    shard: int = option(DEFAULT_SHARD, help="clips per task (a multiple of --chunk)")
    scheduler: str = option("local", metavar="local|ADDRESS",
                            help="local: a LocalCluster on this machine; or a running scheduler, e.g. tcp://host:8786")
    workers: int | None = option(None, parse=optional(int),
                                 help="local worker processes, one thread each (none: one per core)")
    torch_threads: int = option(1, help="torch threads per task")

    def cell_pairs(self) -> list[tuple[str, str]]:
        """The cells as ``[(checkpoint, condition)]``, duplicates dropped, in the order given."""
        cells = csv_list(self.cells) if isinstance(self.cells, str) else list(self.cells)
        out = []
        for c in cells:
            ckpt, sep, cond = str(c).partition(":")
            out.append((ckpt.strip(), cond.strip() if sep else "clean"))
        return list(dict.fromkeys(out))

    def run_configs(self) -> list[RunConfig]:
        """One :class:`~audiointerp.runner.RunConfig` per cell (every method), paths made absolute
        so that worker processes in other folders read the same files."""
        shared = {f.name: getattr(self, f.name) for f in fields(RunConfig)}
        out = []
        for ckpt, cond in self.cell_pairs():
            cfg = RunConfig(**{**shared, "checkpoint": _absolute(ckpt), "condition": _absolute_condition(cond),
                               "results": _absolute(self.results), "root": self.root and _absolute(self.root),
                               "interpreters": {m: _absolute(p) for m, p in dict(self.interpreters or {}).items()}})
            out.append(cfg)
        return out

    def validate(self) -> GridConfig:
        """Check every field and every cell before any work; returns self.

        Raises:
            ConfigError: no cells, a cell whose checkpoint is not a file, a bad shard (not a
                positive multiple of ``chunk``), scheduler, workers or torch_threads; any
                :meth:`RunConfig.validate` error of a cell (the cell is named).
            CheckpointError: a learned method's interpreter is missing.
        """
        pairs = self.cell_pairs()
        if not pairs:
            raise ConfigError("no cells given: pass --cells CHECKPOINT:CONDITION,...")
        for name in ("shard", "torch_threads", "chunk"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if self.shard % self.chunk:
            raise ConfigError(f"shard ({self.shard}) must be a multiple of chunk ({self.chunk}), so that the grid "
                              f"batches the clips the sequential run batches (and gives its numbers)")
        if not isinstance(self.scheduler, str) or not (self.scheduler == "local" or "://" in self.scheduler
                                                        or self.scheduler.rpartition(":")[2].isdigit()):
            raise ConfigError(f"scheduler must be 'local' or a scheduler address such as tcp://host:8786, "
                              f"got {self.scheduler!r}")
        if self.workers is not None:
            if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
                raise ConfigError(f"workers must be an integer >= 1 (or none: one per core), got {self.workers!r}")
            if self.scheduler != "local":
                raise ConfigError(f"workers ({self.workers}) is for the local scheduler; a running cluster at "
                                  f"{self.scheduler} has its own workers")
        for ckpt, cond in pairs:
            if not Path(ckpt).is_file():
                raise ConfigError(f"cell {ckpt}:{cond}: checkpoint {ckpt} does not exist")
        for cfg in self.run_configs():
            try:
                cfg.validate()
            except AudioInterpError as exc:
                raise type(exc)(f"cell {cfg.checkpoint}:{cfg.condition}: {exc}") from None
        self.methods = list(dict.fromkeys(csv_list(self.methods) if isinstance(self.methods, str) else self.methods))
        return self


def _absolute(path) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def _absolute_condition(cond: str) -> str:
    """A condition that names a file becomes its absolute path (the label keeps the file's stem)."""
    from .noise import CONDITIONS

    return cond if cond in CONDITIONS or not Path(cond).expanduser().is_file() else _absolute(cond)


def _environment() -> tuple:
    """The driver's settings (:data:`audiointerp.settings.ENVIRONMENT`), absolute, for the tasks."""
    out = []
    for name in settings.ENVIRONMENT:
        v = settings.env(name)
        out.append((name, _absolute(v) if v is not None else None))
    return tuple(out)


def _apply_environment(env: tuple, threads: int) -> None:
    for name, value in env:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# Tasks (run on the workers)


@dataclass(frozen=True)
class ShardTask:
    """One task: ``files`` of one run folder, for ``masks`` of ``method``.

    Attributes:
        cfg: the cell's :class:`~audiointerp.runner.RunConfig` (all methods; absolute paths).
        method: the attribution method; masks: the mask names the clips miss (in the CSV order).
        files: file names in fold order; positions: their indices in the fold (seeds).
        folder: the run folder; name: the shard folder's name under ``shards/``.
        identity: the dataset's ``clips_sha256`` (workers key their prepared contexts by it).
        env: the driver's environment settings; threads: torch threads.
        label: ``<model>/<method>_<condition> clips <first>-<last>`` for messages.
    """

    cfg: RunConfig
    method: str
    masks: tuple
    files: tuple
    positions: tuple
    folder: str
    name: str
    identity: str
    env: tuple
    threads: int
    label: str


_CONTEXTS: OrderedDict = OrderedDict()
_CONTEXTS_LOCK = threading.Lock()
_CONTEXTS_MAX = 3


def worker_context(cfg: RunConfig, identity: str) -> RunContext:
    """This process's prepared :class:`~audiointerp.runner.RunContext` of a cell (the grid's
    bad-clip tolerance on), built once and reused by every task of the cell that runs here (the
    last three cells are kept). Keyed by the whole configuration and the dataset identity."""
    key = (json.dumps(asdict(cfg), sort_keys=True, default=str), identity)
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            ctx = RunContext(cfg, tolerate_bad=True)
            ctx.lock = threading.Lock()
            _CONTEXTS[key] = ctx
            while len(_CONTEXTS) > _CONTEXTS_MAX:
                _CONTEXTS.popitem(last=False)
        _CONTEXTS.move_to_end(key)
    return ctx


def prepare_cell(cfg: RunConfig, identity: str, env: tuple, threads: int) -> dict:
    """The shared work of a (checkpoint, condition): the condition's features (cache entry,
    computed once) and the class probabilities of the fold.

    Returns:
        ``{"probs": float32 [n_clips, n_classes], "accuracy": float, "bad": {filename: reason},
        "seconds": {"features": s, "base_forward": s}}``.

    Raises:
        DatasetError / ConfigError / CheckpointError: as :class:`~audiointerp.runner.RunContext`
            (a bad clip is not an error here: it is listed in ``bad``, and only the shard task
            holding it fails, naming it).
    """
    _apply_environment(env, threads)
    ctx = worker_context(cfg, identity)
    with ctx.lock:
        probs = ctx.probabilities()
        return {"probs": probs.cpu(), "accuracy": ctx.accuracy, "bad": dict(ctx.bad), "seconds": dict(ctx.seconds),
                "host": socket.gethostname(), "pid": os.getpid()}


def _shard_valid(folder: Path, task: ShardTask, inputs: str, fingerprint: dict | None = None) -> bool:
    """A committed shard of ``task`` computed from the same inputs: its shard.json names the same
    clips and masks (the name covers the configuration key, chunk and clip digests), and its
    clips' features and probabilities are this run's: bitwise (``inputs``, :func:`_inputs_digest`)
    or, computed on another CPU, equal up to float rounding (``fingerprint``,
    :func:`inputs_fingerprint` and :func:`fingerprints_match`). A shard written before fingerprints
    existed is reused only bitwise."""
    try:
        info = json.loads((folder / "shard.json").read_text())
    except (OSError, ValueError):
        return False
    same_inputs = info.get("inputs") == inputs or (
        fingerprint is not None and fingerprints_match(info.get("fingerprint"), fingerprint))
    return (info.get("format") == SHARD_FORMAT and info.get("name") == task.name
            and info.get("files") == list(task.files) and info.get("masks") == list(task.masks)
            and same_inputs and all((folder / "rows" / f"{m}.csv").is_file() for m in task.masks))


def _inputs_digest(ctx: RunContext, files) -> str:
    """SHA-256 of the bytes of the features and class probabilities of ``files``: a committed shard
    is reused when its clips' inputs are bitwise the ones this run would compute from."""
    idx = [ctx.index[fn] for fn in files]
    h = hashlib.sha256()
    h.update(ctx.features()[idx].cpu().numpy().tobytes())
    h.update(ctx.probabilities()[idx].cpu().numpy().tobytes())
    return h.hexdigest()


#: Seeded random directions per fingerprint; tolerances of :func:`fingerprints_match`.
FINGERPRINT_DIRECTIONS = 4
FINGERPRINT_FEATURE_ATOL = 1e-3  # dB, on per-clip means, standard deviations and unit-norm projections
FINGERPRINT_PROBABILITY_ATOL = 1e-4


def inputs_fingerprint(features: torch.Tensor, probabilities: torch.Tensor) -> dict:
    """A per-clip summary of a shard's inputs that survives float rounding but not a change of data.

    The bitwise digest of the features differs between CPUs (different SIMD kernels round
    differently, ~1e-6 relative), which would make a grid resumed on another machine recompute
    every committed shard. The fingerprint keeps, per clip, the mean and standard deviation of its
    features and their projections on :data:`FINGERPRINT_DIRECTIONS` seeded unit-norm Gaussian
    directions (a Johnson–Lindenstrauss sketch, in float64), and the same projections of its class
    probabilities with their arg max. A replaced clip, another noise, offset or level moves these
    by whole dB or whole percents; rounding moves them by ~1e-5.

    Args:
        features: ``[n_clips, 1, n_bins, n_frames]`` float features (dB).
        probabilities: ``[n_clips, n_classes]`` float class probabilities.

    Returns:
        ``{"features": [[mean, std, p1..pK] per clip] (dB), "probabilities": [[p1..pK] per clip],
        "argmax": [class per clip]}``: plain lists, for shard.json.

    Raises:
        ValueError: features and probabilities of different clip counts.
    """
    if len(features) != len(probabilities):
        raise ValueError(f"inputs_fingerprint: {len(features)} clips of features but {len(probabilities)} "
                         "of probabilities")
    x = features.detach().reshape(len(features), -1).to("cpu", torch.float64)
    p = probabilities.detach().to("cpu", torch.float64)
    g = torch.Generator().manual_seed(0)
    wx = torch.randn(x.shape[1], FINGERPRINT_DIRECTIONS, generator=g, dtype=torch.float64)
    wp = torch.randn(p.shape[1], FINGERPRINT_DIRECTIONS, generator=g, dtype=torch.float64)
    fx = torch.cat([x.mean(1, keepdim=True), x.std(1, keepdim=True), x @ (wx / wx.norm(dim=0))], 1)
    fp = p @ (wp / wp.norm(dim=0))
    return {"features": [[round(v, 6) for v in row] for row in fx.tolist()],
            "probabilities": [[round(v, 8) for v in row] for row in fp.tolist()],
            "argmax": p.argmax(1).tolist()}


def fingerprints_match(a: dict | None, b: dict | None) -> bool:
    """Whether two :func:`inputs_fingerprint` results describe the same inputs up to float
    rounding: feature summaries within :data:`FINGERPRINT_FEATURE_ATOL` dB, probability
    projections within :data:`FINGERPRINT_PROBABILITY_ATOL`, identical arg max. ``None`` or a
    malformed fingerprint (a shard written before fingerprints) matches nothing."""
    try:
        return (a["argmax"] == b["argmax"]
                and np.allclose(a["features"], b["features"], rtol=0.0, atol=FINGERPRINT_FEATURE_ATOL)
                and np.allclose(a["probabilities"], b["probabilities"], rtol=0.0,
                                atol=FINGERPRINT_PROBABILITY_ATOL))
    except (TypeError, KeyError, ValueError):
        return False


def _inputs_fingerprint(ctx: RunContext, files) -> dict:
    """:func:`inputs_fingerprint` of ``files`` in ``ctx``."""
    idx = [ctx.index[fn] for fn in files]
    return inputs_fingerprint(ctx.features()[idx], ctx.probabilities()[idx])


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (the shard's bytes are on disk before the
    rename that commits it)."""
    for p in sorted(folder.rglob("*"), reverse=True) + [folder]:
        with contextlib.suppress(OSError):
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def compute_shard(task: ShardTask, prepared: dict) -> dict:
    """Compute one shard (a Dask task): its clips through the runner's compute path
    (:func:`audiointerp.runner.score_clips`) into a temporary folder, committed by one rename.

    Idempotent: a shard already committed from the same inputs (bitwise, or up to float rounding when
    it was computed on another CPU: :func:`_shard_valid`) is not recomputed (one committed
    from other inputs, e.g. before a bad clip of the fold was fixed, is replaced); a temporary
    folder left by a worker that died is never read (the next run removes it). A run folder
    already assembled as complete is never written to: a late re-execution of one of its tasks
    (Dask recomputing a result lost with a dead worker) returns at once, or discards its work.

    Args:
        task: the :class:`ShardTask`; prepared: :func:`prepare_cell`'s result for its cell.

    Returns:
        ``{"task", "clips", "seconds", "cpu_seconds" (the worker process's CPU time meanwhile: below
        ``seconds`` when other work shares the cores), "setup_seconds" (this worker's context of the cell, first
        task only), "overhead_seconds" (the task's time outside set-up and the compute path:
        digests, writes, commit), "attribution_seconds", "mask_forward_seconds",
        "audio_domain_seconds", "done_before", "host", "cpu" (:func:`~audiointerp.devices.cpu_model`), "pid",
        "threads"}``.

    Raises:
        GridError: bad input (a bad clip, an unreadable file, a method that cannot be built):
            one line naming the task's run folder and clips, and the file.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    _apply_environment(task.env, task.threads)
    folder = Path(task.folder) / SHARDS
    final = folder / task.name
    base = {"task": task.label, "host": socket.gethostname(), "cpu": cpu_model(), "pid": os.getpid(),
            "threads": task.threads}
    try:
        t_setup = time.perf_counter()
        ctx = worker_context(task.cfg, task.identity)
        t_setup = time.perf_counter() - t_setup
        if ctx.identity["clips_sha256"] != task.identity:
            raise ResultsError(f"the clips of {ctx.ds.root} changed on disk after the grid was planned; run it again")
        with ctx.lock:
            ctx.use_bad_clips(prepared["bad"])
            ctx.use_probabilities(prepared["probs"])
            ctx.check_clips(task.files)
            inputs, fingerprint = _inputs_digest(ctx, task.files), _inputs_fingerprint(ctx, task.files)
            if _shard_valid(final, task, inputs, fingerprint) or _assembled(task):
                return {**base, "clips": len(task.files), "seconds": 0.0, "done_before": True}
            make_folder(folder)
            tmp = folder / f".tmp-{task.name}-{uuid.uuid4().hex[:8]}"
            texts = {m: [] for m in task.masks}
            parts = {"attribution": 0.0, "mask_forward": 0.0, "audio": 0.0}
            with writing(tmp):
                (tmp / "attributions").mkdir(parents=True)
                (tmp / "rows").mkdir()
            for piece in score_clips(ctx, task.method, list(task.files), list(task.masks), tmp):
                for part, sec in piece.seconds.items():
                    parts[part] += sec
                for m in task.masks:
                    texts[m].append(rows_text(piece.rows[m], header=False))
            with writing(tmp):  # a private folder: plain writes, made durable by one fsync pass before the commit
                for m in task.masks:
                    (tmp / "rows" / f"{m}.csv").write_text("".join(texts[m]), encoding="utf-8")
            seconds = time.perf_counter() - t0
            write_json(tmp / "shard.json", {
                "format": SHARD_FORMAT, "name": task.name, "method": task.method, "files": list(task.files),
                "positions": list(task.positions), "masks": list(task.masks), "chunk": task.cfg.chunk,
                "inputs": inputs, "fingerprint": fingerprint,
                "accuracy": prepared["accuracy"], "shared_seconds": prepared["seconds"], "seconds": seconds,
                "parts": parts, **base})
    except AudioInterpError as exc:
        raise GridError(f"{task.label}: {exc}") from None
    if _assembled(task):  # assembled meanwhile (this was a late re-execution): nothing to commit
        shutil.rmtree(tmp, ignore_errors=True)
        return {**base, "clips": len(task.files), "seconds": 0.0, "done_before": True}
    _fsync_tree(tmp)
    if final.exists():  # committed from other inputs: set aside first (rename is the commit)
        old = folder / f".old-{task.name}-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(OSError):
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(tmp, final)  # the commit: a shard folder exists whole or not at all
    except OSError:
        if not _shard_valid(final, task, inputs, fingerprint):  # pragma: no cover - a file system that refuses renames
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another attempt of this task committed it first
    seconds = time.perf_counter() - t0
    return {**base, "clips": len(task.files), "seconds": round(seconds, 3),
            "cpu_seconds": round(time.process_time() - cpu0, 3),
            "setup_seconds": round(t_setup, 3), "overhead_seconds": round(seconds - t_setup - sum(parts.values()), 3),
            "attribution_seconds": round(parts["attribution"], 3),
            "mask_forward_seconds": round(parts["mask_forward"], 3),
            "audio_domain_seconds": round(parts["audio"], 3), "done_before": False}


# ---------------------------------------------------------------------------------------------
# Planning and assembly (in the driver, under each run folder's lock)


@dataclass
class _Cell:
    """One run folder of the grid: a (checkpoint, condition, method)."""

    ctx: RunContext
    method: str
    label: str
    shards: list = field(default_factory=list)  # ShardTask in clip order
    todo: list = field(default_factory=list)  # the shard tasks to submit (committed ones return at once)
    previous: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)
    results: list = field(default_factory=list)
    prepared: dict | None = None

    @property
    def out(self) -> Path:
        return self.ctx.run_dirs[self.method]


def _assembled(task: ShardTask) -> bool:
    """True when the task's run folder already holds a complete, assembled run (its run.json says so)."""
    try:
        return json.loads((Path(task.folder) / "run.json").read_text()).get("status") == "complete"
    except (OSError, ValueError, AttributeError):
        return False


def _shard_name(ctx: RunContext, method: str, masks: list, files: list) -> str:
    payload = {"key": ctx.keys[method], "masks": list(masks), "chunk": ctx.cfg.chunk,
               "clips": [[fn, ctx.digests[fn]] for fn in files]}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return f"{ctx.position[files[0]]:05d}-{ctx.position[files[-1]]:05d}-{digest}"


def _read_shard(folder: Path) -> dict | None:
    try:
        info = json.loads((folder / "shard.json").read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("format") == SHARD_FORMAT else None


def _append_shards(cell: _Cell, names: list) -> None:
    """Append the rows of the committed shards ``names`` (in this order) to the cell's CSVs, for
    the (mask, clip) pairs still missing (so completing an interrupted assembly adds nothing
    twice), and move their attribution maps and audio into the run folder. Each CSV is
    rewritten atomically; rows already there are never touched."""
    ctx, out = cell.ctx, cell.out
    csv_dir = out / "csvs"
    make_folder(csv_dir)
    make_folder(out / "attributions")
    missing = missing_clips(csv_dir, ctx.masks_of[cell.method], ctx.wanted, ctx.cfg.domains, repair=True)
    shards = [(out / SHARDS / n, _read_shard(out / SHARDS / n)) for n in names]
    shards = [(p, info) for p, info in shards if info is not None]
    for p, _ in shards:
        with writing(out):
            for src in sorted((p / "attributions").glob("*.npy")):
                os.replace(src, out / "attributions" / src.name)
            for src in sorted((p / "audio").glob("*/*.wav")):
                (out / "audio" / src.parent.name).mkdir(parents=True, exist_ok=True)
                os.replace(src, out / "audio" / src.parent.name / src.name)
    for m in ctx.masks_of[cell.method]:
        need = missing[m]
        if not need:
            continue
        added, seen = [], set()
        for p, info in shards:
            if m not in info["masks"]:
                continue
            text = (p / "rows" / f"{m}.csv").read_text(encoding="utf-8")
            for line in text.splitlines(keepends=True):
                row = dict(zip(CSV_COLUMNS, next(csv.reader([line]))))
                key = (row["filename"], row["domain"])
                if row["filename"] in need and key not in seen:
                    seen.add(key)
                    added.append(line)
        if not added:
            continue
        path = csv_dir / f"{m}.csv"
        with writing(path, "read"):
            old = path.read_text(encoding="utf-8") if path.is_file() else ""
        write_text_atomic(path, (old or rows_text([], header=True)) + "".join(added))


def _remove_shards(out: Path, keep=()) -> None:
    """Remove the shard folders (committed and temporary) of a run folder, except ``keep``."""
    folder = out / SHARDS
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name not in keep and p.name != JOURNAL:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _plan(cell: _Cell, cfg: GridConfig, env: tuple) -> None:
    """Under the cell's lock: check its folder, complete an interrupted assembly, repair its CSVs,
    and split the clips still missing into shards (committed ones are kept, others removed)."""
    ctx, out, method = cell.ctx, cell.out, cell.method
    cell.previous = ctx.check_folder(method)
    journal = read_json(out / SHARDS / JOURNAL) if (out / SHARDS / JOURNAL).is_file() else {}
    if journal.get("shards"):
        _append_shards(cell, journal["shards"])
        (out / SHARDS / JOURNAL).unlink()
    missing = missing_clips(out / "csvs", ctx.masks_of[method], ctx.wanted, ctx.cfg.domains, repair=True)
    for masks, files in clip_groups(missing, ctx.wanted_order):
        for s in range(0, len(files), cfg.shard):
            part = files[s:s + cfg.shard]
            name = _shard_name(ctx, method, masks, part)
            first, last = ctx.position[part[0]], ctx.position[part[-1]]
            cell.shards.append(ShardTask(ctx.cfg, method, tuple(masks), tuple(part),
                                         tuple(ctx.position[f] for f in part), str(out), name,
                                         ctx.identity["clips_sha256"], env, cfg.torch_threads,
                                         f"{cell.label} clips {first}-{last}"))
    _remove_shards(out, keep={t.name for t in cell.shards})
    # Every shard is a task: a committed one returns at once when its inputs are unchanged.
    cell.todo = list(cell.shards)


def _assemble(cell: _Cell, wall: float) -> dict:
    """Under the cell's lock: append every shard (journaled), write run.json, remove the shards."""
    t0 = time.perf_counter()
    ctx, out, method = cell.ctx, cell.out, cell.method
    infos = [_read_shard(out / SHARDS / t.name) for t in cell.shards]
    if any(i is None for i in infos):
        lost = [t.label for t, i in zip(cell.shards, infos) if i is None]
        raise ResultsError(f"{cell.label}: the committed shards of {', '.join(lost[:3])} are gone; run again to "
                           f"recompute them")
    accuracy = (cell.prepared or {}).get("accuracy")
    if accuracy is None and infos:
        accuracy = infos[0]["accuracy"]
    if accuracy is None:
        accuracy = next(iter(cell.previous.get("accuracy", {}).values()), None)
    info = ctx.run_info(method, cell.previous, accuracy)
    write_json(out / "run.json", {**info, "status": "running"})
    if cell.shards:
        make_folder(out / SHARDS)
        write_json(out / SHARDS / JOURNAL, {"shards": [t.name for t in cell.shards]})
    _append_shards(cell, [t.name for t in cell.shards])
    parts = {k: sum(i["parts"].get(k, 0.0) for i in infos) for k in ("attribution", "mask_forward", "audio")}
    shared = infos[0]["shared_seconds"] if infos else {}
    n_clips = len({fn for t in cell.shards for fn in t.files})
    timing = timing_record(n_clips, sum(i["seconds"] for i in infos), parts, shared, ctx.cfg.limit,
                           infos[0]["threads"] if infos else torch.get_num_threads(),
                           grid={"shards": len(cell.shards),
                                 "computed_now": sum(not r.get("done_before") for r in cell.results),
                                 "wall_seconds": round(wall, 2),
                                 "workers": sorted({f"{r['host']}:{r['pid']}" for r in cell.results}),
                                 "cpus": dict(sorted(Counter(i.get("cpu", "not recorded") for i in infos).items()))})
    n_done = ctx.finish_info(method, info, timing)
    _remove_shards(out)
    (out / SHARDS / JOURNAL).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (out / SHARDS).rmdir()
    return {"folder": str(out), "n_clips_done": n_done, **timing, "assembly_seconds": round(time.perf_counter() - t0, 3)}


def _per_clip(history: list, key: str, n: int) -> float | None:
    """Seconds per clip of timing ``key`` summed over a run folder's sessions; None if any lacks it."""
    vals = [h.get(key) for h in history]
    return sum(vals) / n if n and vals and None not in vals else None


def _session_start(entry: dict) -> float | None:
    """Start of the grid session that finished a run folder (POSIX s, from its ``finished`` time
    less its wall seconds), or None when the history entry lacks either."""
    wall, finished = (entry.get("grid") or {}).get("wall_seconds"), entry.get("finished")
    if wall is None or not isinstance(finished, str):
        return None
    try:
        return time.mktime(time.strptime(finished, "%Y-%m-%dT%H:%M:%S")) - wall
    except ValueError:
        return None


def _folder_cpus(info: dict, last_grid: dict) -> list:
    """The CPU models a run folder's shards were computed on (see :func:`timing_report`)."""
    if last_grid.get("cpus"):
        return sorted(last_grid["cpus"])
    cpu = (info.get("device") or {}).get("cpu")
    return [cpu] if cpu else []


def timing_report(results) -> tuple[list, list]:
    """The grid's time per task, per run folder and per cell, from the ``run.json`` files.

    Args:
        results: the results folder (``<results>/<model>/<method>_<condition>/run.json``).

    Returns:
        ``(folders, cells)``. ``folders``: one dict per run folder (``model``, ``condition``,
        ``method``, ``clips``, ``shards`` (tasks; 0 for a sequential ``run``), ``worker_seconds``
        (the tasks' time summed over every session that computed them, s), ``seconds_per_task``,
        ``seconds_per_clip``, ``wall_seconds`` (from the start of the last grid session to this
        folder's assembly, s; None for a sequential run), ``one_session`` (every shard computed in
        that last session), ``accuracy``, and the split of the worker time per clip (s):
        ``attribution_per_clip`` (the method's maps), ``masks_per_clip`` (masking and the
        spectrogram-domain forward passes), ``audio_per_clip`` (re-synthesis, re-analysis and the
        audio-domain forward passes); each None when the run.json does not record it),
        ``session_start`` (POSIX s, see below), ``cpus`` (the CPU models,
        :func:`~audiointerp.devices.cpu_model`, its shards were computed on, from the grid block
        of its last session, else the assembling machine's; ``"not recorded"`` for shards written
        before the model was recorded; empty for older run.json files)). ``cells``: one dict per
        (model, condition) with ``cpus`` (its folders' CPU models: per-clip times compare only
        within one), ``worker_seconds``, ``wall_seconds`` (the largest wall of its folders) and ``speedup``
        (worker over wall seconds: what the workers gave over one process doing the same tasks
        in turn), both None unless every folder of the cell was computed in one grid session and
        none of its folders still waits in shards (``pending_shards``: committed shards of its
        unfinished folders). Folders of one session share its start (``finished`` less
        ``wall_seconds`` in run.json, to within 2 s); a folder added later by another session, e.g.
        LIME at another sample count, leaves the cell without a speedup.

    Raises:
        ResultsError: no run.json under ``results`` (the folder is named).
    """
    runs = sorted(Path(results).glob("*/*/run.json"))
    if not runs:
        raise ResultsError(f"no run.json under {results}: run the grid (make grid) first")
    folders, cells = [], {}
    for path in runs:
        info = json.loads(path.read_text())
        hist = info.get("history", [])
        seconds = sum(h.get("seconds", 0.0) or 0.0 for h in hist)
        n = info.get("n_clips_done", 0)
        last = (hist[-1] if hist else {}).get("grid") or {}
        shards = last.get("shards", 0)
        row = {"model": info.get("model", path.parent.parent.name),
               "condition": info.get("condition", path.parent.name.partition("_")[2]),
               "method": path.parent.name.rpartition("_")[0], "clips": n, "shards": shards,
               "worker_seconds": seconds, "seconds_per_task": seconds / shards if shards else None,
               "seconds_per_clip": seconds / n if n else None, "wall_seconds": last.get("wall_seconds"),
               "one_session": bool(last) and len(hist) == 1 and last.get("computed_now") == shards,
               "session_start": _session_start(hist[-1]) if hist else None,
               "accuracy": next(iter(info.get("accuracy", {}).values()), None),
               "attribution_per_clip": _per_clip(hist, "attribution_seconds", n),
               "masks_per_clip": _per_clip(hist, "mask_forward_seconds", n),
               "audio_per_clip": _per_clip(hist, "audio_domain_seconds", n),
               "cpus": _folder_cpus(info, last)}
        folders.append(row)
        cells.setdefault((row["model"], row["condition"]), []).append(row)
    out = []
    for (model, cond), rows in cells.items():
        worker = sum(r["worker_seconds"] for r in rows)
        # a folder of the cell still in shards: its tasks shared the wall but are not in the worker time
        pending = [f for f in Path(results).glob(f"{model}/*_{cond}/{SHARDS}/*") if not f.name.startswith(".")]
        starts = [r["session_start"] for r in rows]
        same = None not in starts and max(starts) - min(starts) <= 2.0
        one = all(r["one_session"] for r in rows) and same and not pending
        wall = max(r["wall_seconds"] for r in rows) if one else None
        out.append({"model": model, "condition": cond, "folders": len(rows), "worker_seconds": worker,
                    "wall_seconds": wall, "speedup": worker / wall if wall else None,
                    "pending_shards": len(pending), "cpus": sorted({c for r in rows for c in r["cpus"]})})
    return folders, out


# ---------------------------------------------------------------------------------------------
# The driver


@dataclass
class GridResult:
    """What :func:`run_grid` returns.

    Attributes:
        cells: ``{run folder label: summary}`` (``finished`` for cells that were complete before,
            else the run.json timing of the assembly, or ``failed``).
        failed: ``[(task label, one-line error)]`` of the tasks that failed.
        tasks: tasks run (preparation and shards); seconds: wall time of the grid.
        dashboard: the Dask dashboard address (None without one).
        task_results: what each finished task returned (:func:`compute_shard`'s timings per
            shard; the preparation tasks' shared-work seconds), in the order they finished.
    """

    cells: dict
    failed: list
    tasks: int
    seconds: float
    dashboard: str | None = None
    task_results: list = field(default_factory=list)

    def summary(self) -> dict:
        """A JSON-able summary (cells, failures, counts, seconds)."""
        return {"cells": self.cells, "failed": [{"task": t, "error": e} for t, e in self.failed],
                "tasks": self.tasks, "seconds": round(self.seconds, 2), "dashboard": self.dashboard}

    def raise_for_failures(self) -> None:
        """Raise :class:`GridError` listing the failed tasks (one line), if any failed."""
        if self.failed:
            listed = "; ".join(f"[{t}] {e}" for t, e in self.failed)
            raise GridError(f"{len(self.failed)} of {self.tasks} grid tasks failed (the others finished and were "
                            f"kept; fix the input and run again to compute only these): {listed}")


def open_client(cfg: GridConfig):
    """A ``distributed.Client`` for ``cfg.scheduler`` and the cluster it started (None for a
    running scheduler): ``local`` starts a ``LocalCluster`` of ``cfg.workers`` (default: one
    per core) single-threaded worker processes.

    Raises:
        ConfigError: the scheduler cannot be reached or the cluster cannot start (one line).
    """
    import importlib.util
    import logging
    import warnings

    import dask
    from distributed import Client, LocalCluster

    try:
        if cfg.scheduler == "local":
            # the dashboard needs bokeh (optional); without it only a bare HTTP endpoint, on any free port
            dashboard = ":8787" if importlib.util.find_spec("bokeh") else ":0"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "port 8787 is in use, using another one"
                cluster = LocalCluster(n_workers=cfg.workers or os.cpu_count() or 1, threads_per_worker=1,
                                       processes=True, dashboard_address=dashboard, worker_dashboard_address=None,
                                       silence_logs=logging.CRITICAL)  # failures are reported by the driver
            return Client(cluster), cluster
        return Client(cfg.scheduler, timeout=dask.config.get("distributed.comm.timeouts.connect")), None
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler {cfg.scheduler}: {exc}") from None


def _dashboard(client) -> str | None:
    """The client's dashboard address, or None when the scheduler serves none (no bokeh)."""
    try:
        return client.dashboard_link if client.scheduler_info().get("services", {}).get("dashboard") else None
    except Exception:  # pragma: no cover - an old or unusual scheduler
        return None


def run_grid(cfg: GridConfig, client=None, progress: bool | None = True, shard_fn=None,
             on_task=None) -> GridResult:
    """Run the grid (module docstring): plan every run folder, run the tasks on Dask, assemble.

    Args:
        cfg: the :class:`GridConfig` (validated here).
        client: a ``distributed.Client`` to use (None: :func:`open_client` of ``cfg.scheduler``,
            closed at the end).
        progress: show a progress bar (tasks), the dashboard address and one line per assembled run
            folder, on stderr (None: only when stderr is a terminal).
        shard_fn: the function a shard task runs (default :func:`compute_shard`); a wrapper with
            the same signature may add instrumentation (the tests kill a worker with one).
        on_task: called in the driver as each task ends with ``{"task", "status": "done" |
            "failed", "seconds", "worker", "error"}`` (the grid notebook's per-task table).

    Returns:
        a :class:`GridResult` (failed tasks listed; :meth:`GridResult.raise_for_failures`).

    Raises:
        ConfigError / CheckpointError / DatasetError: a bad configuration, cell or dataset, before
            any task runs. ResultsError: a run folder with another configuration or dataset, or
            held by another writer (named; nothing is overwritten).
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    if progress is None:
        progress = sys.stderr.isatty()
    cfg.validate()
    env = _environment()
    shard_fn = shard_fn or compute_shard
    contexts = [RunContext(c) for c in cfg.run_configs()]
    cells, summaries, folders = [], {}, {}
    for ctx in contexts:
        for method in ctx.cfg.methods:
            label = f"{ctx.name}/{ctx.run_dirs[method].name}"
            out = ctx.run_dirs[method]
            if out in folders:
                raise ConfigError(f"cells {folders[out]} and {ctx.cfg.checkpoint}:{ctx.cfg.condition} write the same "
                                  f"folder {out}")
            folders[out] = f"{ctx.cfg.checkpoint}:{ctx.cfg.condition}"
            if ctx.finished(method) is not None:
                summaries[label] = {"folder": str(out), "finished": True, "clips_computed": 0}
                continue
            cells.append(_Cell(ctx, method, label))
    failed: list = []
    n_tasks, dashboard, results = 0, None, []
    with contextlib.ExitStack() as locks:
        if cells:
            make_folder(cfg.results)
        for cell in cells:
            locks.enter_context(run_lock(cell.out))
            _plan(cell, cfg, env)
        todo = [c for c in cells if c.todo]
        for cell in cells:
            if not cell.todo:
                summaries[cell.label] = _assemble(cell, 0.0)
        if todo:
            own = client is None
            cluster = None
            if own:
                client, cluster = open_client(cfg)
            try:
                dashboard = _dashboard(client)
                if progress and dashboard:
                    print(f"Dask dashboard: {dashboard}", file=sys.stderr, flush=True)
                n_tasks, failed = _run_tasks(client, todo, summaries, shard_fn, on_task, progress, t_start,
                                             as_completed, tqdm, results)
            finally:
                if own:
                    client.close()
                    if cluster is not None:
                        cluster.close()
    return GridResult(summaries, failed, n_tasks, time.perf_counter() - t_start, dashboard, results)


def _run_tasks(client, todo: list, summaries: dict, shard_fn, on_task, progress: bool, t_start: float,
               as_completed, tqdm, results: list) -> tuple[int, list]:
    """Submit the preparation and shard tasks of the ``todo`` cells, assemble each cell as its
    last shard lands; returns (tasks run, failures)."""
    token = uuid.uuid4().hex[:8]
    pairs: dict = {}
    for cell in todo:
        pairs.setdefault(id(cell.ctx), (cell.ctx, []))[1].append(cell)
    futures, owner = [], {}
    for ctx, pair_cells in pairs.values():
        t0 = pair_cells[0].todo[0]
        prep = client.submit(prepare_cell, ctx.cfg, t0.identity, t0.env, t0.threads, pure=False, priority=100,
                             key=f"prepare-{ctx.name}-{ctx.noise.label}-{token}")
        futures.append(prep)
        owner[prep.key] = ("prepare", pair_cells, f"{ctx.name} {ctx.noise.label} preparation")
        for cell in pair_cells:
            weight = int(10 * method_weight(cell.method, cell.ctx.cfg.lime_nsamples))
            for task in cell.todo:
                fut = client.submit(shard_fn, task, prep, pure=False, priority=weight,
                                    key=f"shard-{cell.label.replace('/', '-')}-{task.name}-{token}")
                futures.append(fut)
                owner[fut.key] = ("shard", cell, task.label)
    pending = {id(c): len(c.todo) for c in todo}
    failed = []
    bar = tqdm(total=len(futures), desc="grid tasks", disable=not progress, file=sys.stderr)
    try:
        for fut in as_completed(futures):
            kind, who, label = owner[fut.key]
            status = fut.status
            error = None
            if status == "error":
                exc = fut.exception()
                error = str(exc) if isinstance(exc, AudioInterpError) else f"{type(exc).__name__}: {exc}"
                if not error.startswith(label):
                    error = f"{label}: {error}"
                result = {}
            else:
                result = fut.result()
                results.append({k: v for k, v in result.items() if k != "probs"})
            if kind == "shard":
                # consumed: the scheduler forgets it, so a worker lost later does not make Dask recompute
                # it (and write its shard again) after the cell is assembled
                fut.release()
            if on_task is not None:
                seconds = result.get("seconds")
                on_task({"task": label, "status": "failed" if error else "done",
                         "seconds": sum(seconds.values()) if isinstance(seconds, dict) else seconds,
                         "worker": f"{result.get('host')}:{result.get('pid')}" if result else None, "error": error})
            bar.update(1)
            if kind == "prepare":
                if error:
                    failed.append((label, error.removeprefix(f"{label}: ")))
                    for cell in who:
                        cell.failed.append(label)
                else:
                    for cell in who:
                        cell.prepared = {k: v for k, v in result.items() if k != "probs"}
                continue
            cell = who
            if error:
                if not cell.failed or cell.prepared is not None:  # not a consequence of a failed preparation
                    failed.append((label, error.removeprefix(f"{label}: ")))
                cell.failed.append(label)
            else:
                cell.results.append(result)
            pending[id(cell)] -= 1
            if pending[id(cell)] == 0:
                if cell.failed:
                    summaries[cell.label] = {"folder": str(cell.out), "failed": cell.failed}
                else:
                    summaries[cell.label] = _assemble(cell, time.perf_counter() - t_start)
                    if progress:
                        bar.write(f"{cell.label}: {summaries[cell.label]['n_clips_done']} clips, assembled from "
                                  f"{len(cell.shards)} shards", file=sys.stderr)
    finally:
        bar.close()
        client.cancel(futures)
    return len(futures), failed
