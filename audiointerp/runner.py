"""The experiment runner: explain every clip of a fold, mask, score and log.

For a checkpoint, a list of methods, a condition and a fold, :func:`run` writes per method::

    <results>/<model>/<method>_<condition>/
        run.json                 config, package versions, git commit, seed, timings, accuracy
        attributions/<clip>.npy  float16 attribution map [1, n_freq, n_frames] per clip
        csvs/<mask>.csv          one row per clip: sample, filename, label, pred, is_correct,
                                 FF, AI, AD, AG, FidIn, SPS, COMP

Clips are processed in chunks; all masks of the chunk's clips (x_in and x_out of every mask)
go through the model in one batch. After each chunk, its rows are appended to every mask's
CSV. A run killed at any point resumes where it stopped: on start, each CSV is read back, torn
or duplicated rows are dropped, clips missing from any CSV are removed from all and recomputed
(attribution draws are seeded per clip, so recomputation is identical), so no clip is lost or
written twice. A results folder holding a run with another configuration is never
overwritten (:class:`~audiointerp.errors.ResultsError`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import ESC50, TRAIN_FOLDS, fold_features
from .errors import ConfigError, ResultsError, unknown_name
from .fit import predict_logits
from .interpret import METHODS, make_method, stratified_background
from .masks import DEFAULT_K, DEFAULT_TAU, apply_mask, check_fraction, make_masks, mask_names
from .metrics import METRIC_NAMES, score
from .models import load_classifier, model_name, package_versions

CONDITIONS = ("clean",)
CSV_COLUMNS = ["sample", "filename", "label", "pred", "is_correct", *METRIC_NAMES]


@dataclass
class RunConfig:
    """What :func:`run` computes.

    Attributes:
        checkpoint: classifier checkpoint path.
        methods: attribution methods (``saliency``, ``gradcam``, ``shap``).
        condition: listening condition (``clean``).
        fold: ESC-50 fold to explain (5).
        limit: only the first ``limit`` clips of the fold (None: all 400).
        results: results root folder.
        masks: mask names (None: all 14).
        k, tau: mask parameters (fractions).
        seed: seed of SHAP draws and background choice.
        shap_nsamples: SHAP draws per clip; shap_background_per_class: background clips per class.
        chunk: clips per chunk (one batch of masks per chunk; the resume granularity).
        root: ESC-50 root (None: ``ESC50_ROOT``).
    """

    checkpoint: str
    methods: list = field(default_factory=lambda: ["saliency", "gradcam", "shap"])
    condition: str = "clean"
    fold: int = 5
    limit: int | None = None
    results: str = "results"
    masks: list | None = None
    k: tuple = DEFAULT_K
    tau: tuple = DEFAULT_TAU
    seed: int = 0
    shap_nsamples: int = 32
    shap_background_per_class: int = 2
    chunk: int = 8
    root: str | None = None

    def validate(self) -> None:
        """Raise ConfigError for unknown methods/masks/conditions or bad numbers (names them)."""
        if isinstance(self.methods, str):
            self.methods = [m for m in self.methods.split(",") if m]
        if not self.methods:
            raise ConfigError(f"no methods given; valid methods: {', '.join(METHODS)}")
        for m in self.methods:
            if m not in METHODS:
                raise unknown_name("method", m, METHODS)
        if self.condition not in CONDITIONS:
            raise unknown_name("condition", self.condition, CONDITIONS)
        for name, values in (("k", self.k), ("tau", self.tau)):
            if not values:
                raise ConfigError(f"mask parameter {name} needs at least one value")
            for v in values:
                check_fraction(name, v)
        valid = mask_names(self.k, self.tau)
        if isinstance(self.masks, str):
            self.masks = [m for m in self.masks.split(",") if m]
        for m in self.masks or []:
            if m not in valid:
                raise unknown_name("mask", m, valid)
        if self.fold not in range(1, 6):
            raise ConfigError(f"fold must be 1-5, got {self.fold!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit!r}")
        if self.chunk < 1 or self.shap_nsamples < 1:
            raise ConfigError(f"chunk and shap_nsamples must be >= 1, got {self.chunk}, {self.shap_nsamples}")

    @property
    def mask_list(self) -> list:
        return list(self.masks) if self.masks else mask_names(self.k, self.tau)


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


# ---------------------------------------------------------------------------------------------
# CSV logs with crash-safe resume

def _read_rows(path: Path) -> list[dict]:
    """Complete, well-formed rows of a results CSV (a torn last line is dropped)."""
    if not path.is_file():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = []
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header != CSV_COLUMNS:
        if header is None:
            return []
        raise ResultsError(f"{path} has columns {header}, expected {CSV_COLUMNS}; move it away to start afresh")
    for rec in reader:
        if len(rec) == len(CSV_COLUMNS):
            try:
                int(rec[0])
            except ValueError:
                continue
            rows.append(dict(zip(CSV_COLUMNS, rec)))
    return rows


def _csv_text(rows: list[dict], header: bool = True) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
    if header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _write_rows(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        f.write(_csv_text(rows))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _append_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "a", newline="") as f:
        f.write(_csv_text(rows, header=False))
        f.flush()
        os.fsync(f.fileno())


def completed_samples(csv_dir: Path, masks: list[str]) -> set[int]:
    """Repair a method's CSVs after a crash and return the clips present in every mask's CSV.

    Torn lines and duplicate rows are dropped; clips missing from any CSV are removed from
    all, so they are recomputed once. Files are rewritten atomically only when they change.
    """
    csv_dir.mkdir(parents=True, exist_ok=True)
    per_mask = {m: _read_rows(csv_dir / f"{m}.csv") for m in masks}
    sets = [{int(r["sample"]) for r in rows} for rows in per_mask.values()]
    done = set.intersection(*sets) if sets else set()
    for m, rows in per_mask.items():
        path = csv_dir / f"{m}.csv"
        seen, keep = set(), []
        for r in rows:
            s = int(r["sample"])
            if s in done and s not in seen:
                seen.add(s)
                keep.append(r)
        if not path.is_file() or path.read_text() != _csv_text(keep):  # torn line, duplicate, orphan
            _write_rows(path, keep)
    return done


# ---------------------------------------------------------------------------------------------

def _fmt(v) -> str:
    return f"{float(v):.6g}"


def _provenance_key(cfg: RunConfig, ckpt_sha: str, method: str) -> dict:
    """The part of the configuration that determines a method's per-clip results."""
    key = {"checkpoint_sha256": ckpt_sha, "method": method, "condition": cfg.condition, "fold": cfg.fold,
           "masks": cfg.mask_list, "k": list(cfg.k), "tau": list(cfg.tau)}
    if method == "shap":
        key.update(seed=cfg.seed, shap_nsamples=cfg.shap_nsamples,
                   shap_background_per_class=cfg.shap_background_per_class)
    return key


def _check_or_start(run_json: Path, key: dict) -> dict:
    if run_json.is_file():
        old = json.loads(run_json.read_text())
        if old.get("key") != key:
            diff = {k: (old.get("key", {}).get(k), v) for k, v in key.items() if old.get("key", {}).get(k) != v}
            raise ResultsError(f"{run_json.parent} holds a run with another configuration "
                               f"(differs in {diff}); nothing was overwritten: pass another --results "
                               f"folder or move that one away")
        return old
    return {}


def _save_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def run(cfg: RunConfig, progress: bool = True) -> dict:
    """Explain, mask and score every clip of the fold for every method (see module docstring).

    Returns:
        ``{method: summary}`` with the run folder, clips done and timings per method.

    Raises:
        ConfigError: unknown method/mask/condition, bad numbers. CheckpointError: bad checkpoint.
        DatasetError / AudioFileError: dataset problems (the file is named).
        ResultsError: the results folder holds a different run.
    """
    from tqdm.auto import tqdm

    cfg.validate()
    t_start = time.perf_counter()
    model, extractor, ckpt = load_classifier(cfg.checkpoint)
    for p in model.parameters():
        p.requires_grad_(False)
    fcfg = extractor.cfg
    name = model_name(ckpt)
    ckpt_sha = file_sha256(cfg.checkpoint)
    ds = ESC50(cfg.root, (cfg.fold,), fcfg.sample_rate, fcfg.duration)
    t0 = time.perf_counter()
    feats = fold_features(ds, fcfg, progress=progress)
    t_features = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = torch.softmax(predict_logits(model, feats), dim=1)
    t_base = time.perf_counter() - t0
    labels = ds.labels
    preds = probs.argmax(1).numpy()
    accuracy = float((preds == labels).mean())
    n = len(ds) if cfg.limit is None else min(cfg.limit, len(ds))
    masks = cfg.mask_list
    summaries = {}
    for method in cfg.methods:
        out = Path(cfg.results) / name / f"{method}_{cfg.condition}"
        (out / "attributions").mkdir(parents=True, exist_ok=True)
        key = _provenance_key(cfg, ckpt_sha, method)
        previous = _check_or_start(out / "run.json", key)
        done = completed_samples(out / "csvs", masks)
        todo = [i for i in range(n) if i not in done]
        kwargs = {}
        if method == "shap" and todo:  # a finished run needs no background
            tr = ESC50(cfg.root, TRAIN_FOLDS, fcfg.sample_rate, fcfg.duration)
            bg_idx = stratified_background(tr.labels, cfg.shap_background_per_class, cfg.seed)
            kwargs = {"background": fold_features(tr, fcfg, progress=progress)[torch.from_numpy(bg_idx)],
                      "nsamples": cfg.shap_nsamples, "seed": cfg.seed}
        explainer = make_method(method, model, **kwargs) if todo else None
        info = {"key": key, "config": {**asdict(cfg), "methods": [method]}, "model": name,
                "checkpoint": str(cfg.checkpoint), "features": fcfg.to_dict(),
                "versions": package_versions(), "git_commit": git_commit(), "seed": cfg.seed,
                "accuracy": {cfg.condition: accuracy}, "n_clips_fold": len(ds),
                "history": previous.get("history", [])}
        _save_json(out / "run.json", {**info, "status": "running"})
        t_attr = t_fwd = 0.0
        t_method = time.perf_counter()
        bar = tqdm(total=len(todo), desc=f"{name} {method} {cfg.condition}", disable=not progress)
        for s in range(0, len(todo), cfg.chunk):
            idx = todo[s:s + cfg.chunk]
            x = feats[idx]
            target = torch.from_numpy(preds[idx])
            t0 = time.perf_counter()
            with torch.enable_grad():
                attr = explainer.attribute(x, target, seeds=idx)
            t_attr += time.perf_counter() - t0
            for j, i in enumerate(idx):
                path = out / "attributions" / f"{Path(ds.filenames[i]).stem}.npy"
                tmp = path.with_name(path.stem + ".tmp.npy")
                np.save(tmp, attr[j].numpy().astype(np.float16))
                os.replace(tmp, path)
            t0 = time.perf_counter()
            mdict = make_masks(attr, cfg.k, cfg.tau, names=masks)
            m = torch.stack([mdict[k] for k in masks], dim=1)  # [b, n_masks, 1, F, T]
            x_in, x_out = apply_mask(x[:, None], m)
            b, nm = m.shape[:2]
            batch = torch.cat([x_in, x_out], dim=1).reshape(b * 2 * nm, *x.shape[1:])
            p_all = torch.softmax(predict_logits(model, batch, batch_size=len(batch)), 1).reshape(b, 2, nm, -1)
            t_fwd += time.perf_counter() - t0
            for k_i, mname in enumerate(masks):
                sc = score(probs[idx], p_all[:, 0, k_i], p_all[:, 1, k_i], m[:, k_i])
                rows = [{"sample": i, "filename": ds.filenames[i], "label": int(labels[i]), "pred": int(preds[i]),
                         "is_correct": int(preds[i] == labels[i]),
                         **{mt: _fmt(sc[mt][j]) for mt in METRIC_NAMES}} for j, i in enumerate(idx)]
                _append_rows(out / "csvs" / f"{mname}.csv", rows)
            bar.update(len(idx))
        bar.close()
        elapsed = time.perf_counter() - t_method
        n_done = len(completed_samples(out / "csvs", masks))
        timing = {"clips_computed": len(todo), "seconds": round(elapsed, 2), "attribution_seconds": round(t_attr, 2),
                  "mask_forward_seconds": round(t_fwd, 2),
                  "clips_per_second": round(len(todo) / elapsed, 3) if todo and elapsed > 0 else None,
                  "features_seconds": round(t_features, 2), "base_forward_seconds": round(t_base, 3),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        info["history"] = info["history"] + [timing]
        _save_json(out / "run.json", {**info, "status": "complete" if n_done >= n else "partial",
                                      "n_clips_done": n_done, "timings": timing})
        summaries[method] = {"folder": str(out), "n_clips_done": n_done, **timing}
    summaries["_total_seconds"] = round(time.perf_counter() - t_start, 2)
    summaries["_accuracy"] = accuracy
    return summaries
