"""The experiment runner: explain every clip of a fold, mask, score and log — resumably, and only
ever into a run folder that holds the same configuration and the same data.

For a checkpoint, a list of methods, a listening condition and a fold, :func:`run` writes per
method::

    <results>/<model>/<method>_<condition>/
        run.json                 configuration, dataset identity, noise, package versions, git
                                 commit, seed, device, timings, the model's accuracy under the
                                 condition, clips skipped as bad audio
        attributions/<clip>.npy  float16 attribution map [1, n_freq, n_frames] per clip
        csvs/<mask>.csv          one row per (clip, domain): the columns of
                                 :data:`audiointerp.results_io.CSV_COLUMNS`
        audio/<clip>/*.wav       (``audio_examples`` clips only) the clip, and x_in / x_out of
                                 every mask as audio, at the model's sample rate

The steps per chunk of clips — explain, mask, score in both domains — are the scoring layer's
(:mod:`audiointerp.scoring`); this module adds the fold, the logs and their guarantees:

* **Identity.** Each row names its clip (``filename``) and the first 16 hex digits of the clip
  file's SHA-256 (``clip_digest``); ``run.json`` records the dataset's identity (digests of
  ``esc50.csv`` and of the fold's clip list, :meth:`audiointerp.data.ESC50.identity`). A run
  folder written from other data, or with another configuration (checkpoint digest, method,
  condition, masks, k, tau, seeds, interpreter digest, ...), is refused with one error; nothing is
  overwritten.
* **One writer.** A run folder is written under an OS file lock
  (:func:`audiointerp.results_io.run_lock`); a second concurrent run into it is refused, naming
  the holder. The configuration check happens under the lock.
* **Resume never destroys finished work.** Each mask's CSV is repaired on its own (a torn last
  line or a duplicate is dropped; a clip with only some of its domains is rewritten); the
  clips missing from a mask's CSV are recomputed for that mask only, the other CSVs are left as
  they are. Attribution draws are seeded per clip (its index in the fold), so a recomputed clip
  gives the same numbers.
* **Read-only when finished.** A run whose every requested clip is logged is recognised without
  writing anything (no lock, no run.json update), so finished results can be re-read from a
  read-only copy and their provenance is never rewritten.
* **Bad audio.** A clip with NaN/Inf samples, an empty, truncated or silent file is one error
  naming the file; with ``on_bad_clip="skip"`` such clips are left out, listed in
  ``run.json["skipped_clips"]`` and never counted in the accuracy or the tables.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .audio_io import write_audio
from .config import csv_floats, csv_list, key_values, option, optional
from .data import ESC50, read_meta
from .errors import CheckpointError, ConfigError, ResultsError, unknown_name
from .interpret import LEARNED, METHODS, check_method, has_native_mask, make_method
from .masks import DEFAULT_K, DEFAULT_TAU, NATIVE, mask_names
from .metrics import METRIC_NAMES
from .models import fuse_for_inference, load_classifier, model_name
from .noise import CONDITIONS, NoiseSpec
from .processing import INVERSIONS
from .provenance import file_sha256, git_commit, package_versions
from .results_io import (
    append_log,
    fmt_number,
    make_folder,
    read_json,
    read_log,
    run_lock,
    write_json,
    write_log,
    writing,
)
from .scoring import DOMAINS, class_probabilities, condition_features, explain, mask_stack, score_masks

RUN_FORMAT = "audiointerp-run/2"
BAD_CLIP_POLICIES = ("error", "skip")


@dataclass
class RunConfig:
    """What :func:`run` computes. The command line (``python -m audiointerp run``) and the
    experiments notebook are derived from these fields (:mod:`audiointerp.config`).

    Attributes:
        checkpoint: classifier checkpoint path.
        methods: attribution methods (:data:`audiointerp.interpret.METHODS`), a list or a
            comma-separated string.
        interpreters: checkpoint of each learned method (``{"piq": path, "l2i": path}``); a method
            not listed uses ``<classifier folder>/<method>_<classifier stem>.pt``.
        condition: listening condition: ``clean``, a noise of :data:`audiointerp.noise.CONDITIONS`
            or a noise file path.
        alpha: clip weight in the mix (None: 0.6); or snr_db: clip-to-noise ratio in dB.
        noise_offset: seconds skipped at the start of the noise file.
        domains: ``spectrogram`` and/or ``audio``.
        inversion: how masked features become audio (``gain`` or ``pinv``,
            :func:`audiointerp.processing.resynthesise`).
        audio_examples: write the audio of the first N clips' masks (0: none).
        fold: the fold to explain (5).
        limit: only the first ``limit`` clips of the fold (None: all).
        results: results root folder.
        masks: mask names (None: all of k and tau).
        k, tau: mask parameters (fractions in (0, 1]).
        seed: seed of SHAP draws and background choice.
        shap_nsamples: SHAP draws per clip; shap_background_per_class: background clips per class.
        chunk: clips per chunk (one batch of masks per chunk; the resume granularity).
        root: dataset root (None: ``ESC50_ROOT``).
        on_bad_clip: ``error`` (default: a bad clip stops the run, named) or ``skip`` (bad clips
            are left out and listed in run.json).
    """

    checkpoint: str = option(help="classifier checkpoint, e.g. weights/compact_mel.pt", metavar="PATH")
    methods: list = option(default_factory=lambda: ["saliency", "gradcam", "shap"], parse=csv_list,
                           choices=tuple(METHODS), help="attribution methods, comma-separated")
    interpreters: dict = option(default_factory=dict, parse=key_values, metavar="METHOD=PATH,...",
                                help="learned interpreters' checkpoints (default: <method>_<classifier>.pt "
                                     "next to the classifier)")
    condition: str = option("clean", parse=str, choices=CONDITIONS,
                            help="listening condition: a name, or the path of an audio file of background noise")
    alpha: float | None = option(None, parse=optional(float), help="clip weight in the mix (noisy conditions; "
                                 "none: 0.6, about 3.5 dB)")
    snr_db: float | None = option(None, parse=optional(float), help="clip-to-noise ratio in dB, instead of "
                                  "--alpha (noisy conditions)")
    noise_offset: float = option(0.0, help="seconds skipped at the start of the noise (noisy conditions)")
    domains: tuple = option(DOMAINS, parse=lambda s: tuple(csv_list(s)), choices=DOMAINS,
                            help="scoring domains, comma-separated")
    inversion: str = option("gain", choices=INVERSIONS, help="how masked features become audio")
    audio_examples: int = option(0, help="write the masks' audio of the first N clips")
    fold: int = option(5, help="the fold to explain")
    limit: int | None = option(None, parse=optional(int), help="only the first N clips of the fold (none: all)")
    results: str = option("results", help="results root folder", metavar="DIR")
    masks: list | None = option(None, parse=optional(csv_list), help="mask names, comma-separated (none: all)")
    k: tuple = option(DEFAULT_K, parse=csv_floats, help="top-K fractions, comma-separated")
    tau: tuple = option(DEFAULT_TAU, parse=csv_floats, help="thresholds of pos_thresh, comma-separated")
    seed: int = option(0, help="seed of SHAP's draws and background choice")
    shap_nsamples: int = option(32, help="SHAP draws per clip")
    shap_background_per_class: int = option(2, help="SHAP background clips per class (training folds)")
    chunk: int = option(8, help="clips per chunk (one batch of masks; the resume granularity)")
    root: str | None = option(None, parse=optional(str), metavar="DIR",
                              help="dataset root (none: the ESC50_ROOT environment variable)")
    on_bad_clip: str = option("error", choices=BAD_CLIP_POLICIES,
                              help="a clip with NaN/Inf, empty, truncated or silent audio: stop with an error "
                                   "naming it, or skip it (listed in run.json)")

    def validate(self) -> RunConfig:
        """Check every field before any work; returns self (normalised: lists, tuples).

        Raises:
            ConfigError: an unknown method, mask, condition, domain or inversion; bad numbers
                (quoted); noise parameters given with ``clean``; interpreters for methods that
                are not learned methods of this run; k / tau values whose mask names collide.
            CheckpointError: a learned method's interpreter file is missing.
        """
        if isinstance(self.methods, str):
            self.methods = csv_list(self.methods)
        self.methods = list(dict.fromkeys(self.methods))
        if not self.methods:
            raise ConfigError(f"no methods given; valid methods: {', '.join(METHODS)}")
        for m in self.methods:
            check_method(m)
        if isinstance(self.interpreters, str):
            self.interpreters = key_values(self.interpreters)
        for m in self.interpreters:
            if m not in LEARNED:
                raise ConfigError(f"interpreters: {m!r} is not a learned method (learned methods: {', '.join(LEARNED)})")
            if m not in self.methods:
                raise ConfigError(f"interpreters: {m!r} is given but not among the methods {self.methods}")
        self.noise.validate()
        for m in self.methods:
            if m in LEARNED and not Path(self.interpreter(m)).is_file():
                raise CheckpointError(f"no {m} interpreter for {self.checkpoint}: {self.interpreter(m)} is missing; "
                                      f"train one with notebooks/train_{m}.ipynb or pass its path in interpreters")
        if isinstance(self.domains, str):
            self.domains = tuple(csv_list(self.domains))
        self.domains = tuple(dict.fromkeys(self.domains))
        if not self.domains:
            raise ConfigError(f"no domains given; valid domains: {', '.join(DOMAINS)}")
        for d in self.domains:
            if d not in DOMAINS:
                raise unknown_name("domain", d, DOMAINS)
        if self.inversion not in INVERSIONS:
            raise unknown_name("inversion", self.inversion, INVERSIONS)
        if self.on_bad_clip not in BAD_CLIP_POLICIES:
            raise unknown_name("on_bad_clip policy", self.on_bad_clip, BAD_CLIP_POLICIES)
        for name in ("audio_examples", "fold", "chunk", "shap_nsamples", "shap_background_per_class", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ConfigError(f"{name} must be an integer, got {v!r}")
        if self.audio_examples < 0:
            raise ConfigError(f"audio_examples must be >= 0, got {self.audio_examples!r}")
        if self.fold < 1:
            raise ConfigError(f"fold must be >= 1, got {self.fold!r}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, (int, np.integer))
                                       or self.limit < 1):
            raise ConfigError(f"limit must be an integer >= 1 (or None for all clips), got {self.limit!r}")
        if self.chunk < 1 or self.shap_nsamples < 1 or self.shap_background_per_class < 1:
            raise ConfigError(f"chunk, shap_nsamples and shap_background_per_class must be >= 1, got {self.chunk}, "
                              f"{self.shap_nsamples}, {self.shap_background_per_class}")
        self.k, self.tau = tuple(float(v) for v in self.k), tuple(float(v) for v in self.tau)
        valid = mask_names(self.k, self.tau)  # refuses bad or colliding k / tau
        if isinstance(self.masks, str):
            self.masks = csv_list(self.masks)
        if self.masks is not None:
            self.masks = list(dict.fromkeys(self.masks))
            if not self.masks:
                raise ConfigError(f"masks is empty; valid masks: {', '.join(valid)} (or None for all)")
            for m in self.masks:
                if m not in valid:
                    raise unknown_name("mask", m, valid)
        return self

    @property
    def noise(self) -> NoiseSpec:
        """The listening condition as a :class:`audiointerp.noise.NoiseSpec`."""
        return NoiseSpec(str(self.condition), self.alpha, self.snr_db, self.noise_offset)

    @property
    def mask_list(self) -> list:
        """The mask names scored for every method (``masks``, or all of ``k`` and ``tau``)."""
        return list(self.masks) if self.masks else mask_names(self.k, self.tau)

    def interpreter(self, method: str) -> str:
        """The interpreter checkpoint of learned method ``method``."""
        from .learned import default_interpreter_path

        return str(self.interpreters.get(method) or default_interpreter_path(self.checkpoint, method))


def _provenance_key(cfg: RunConfig, ckpt_sha: str, method: str, masks: list) -> dict:
    """The part of the configuration that determines a method's per-clip results."""
    noise = cfg.noise.describe()
    key = {"checkpoint_sha256": ckpt_sha, "method": method, "condition": cfg.noise.label, "fold": cfg.fold,
           "noise_sha256": noise and noise["sha256"], "alpha": noise and noise["alpha_used"],
           "noise_offset": noise and noise["offset"], "domains": list(cfg.domains), "inversion": cfg.inversion,
           "masks": list(masks), "k": list(cfg.k), "tau": list(cfg.tau)}
    if method in LEARNED:
        key["interpreter_sha256"] = file_sha256(cfg.interpreter(method))
    if method == "shap":
        key.update(seed=cfg.seed, shap_nsamples=cfg.shap_nsamples,
                   shap_background_per_class=cfg.shap_background_per_class)
    return key


def _check_run(run_dir: Path, info: dict, key: dict, identity: dict) -> None:
    """Refuse a run folder written with another configuration or from other data.

    Raises:
        ResultsError: the differing keys (old and new values), or the two dataset identities.
    """
    if not info:
        return
    old = info.get("key", {})
    if old != key:
        diff = {k: (old.get(k), v) for k, v in {**old, **key}.items() if old.get(k) != key.get(k)}
        raise ResultsError(f"{run_dir} holds a run with another configuration (differs in {diff}); nothing was "
                           f"overwritten: pass another --results folder or move that one away")
    have = info.get("dataset")
    if have and any(have.get(k) != identity[k] for k in ("clips_sha256", "meta_sha256")):
        what = "clip files" if have.get("clips_sha256") != identity["clips_sha256"] else "esc50.csv"
        raise ResultsError(f"{run_dir} was written from another dataset (its {what} differ: {have.get('n_clips')} "
                           f"clips of {have.get('root')}, clips digest {str(have.get('clips_sha256'))[:12]}, csv digest "
                           f"{str(have.get('meta_sha256'))[:12]}; now {identity['n_clips']} clips of {identity['root']}, "
                           f"{identity['clips_sha256'][:12]}, {identity['meta_sha256'][:12]}); nothing was overwritten: "
                           f"pass another --results folder or move that one away")


def _clip_status(log, wanted: dict, domains) -> tuple[set, set]:
    """(complete clips, clips with only some domains) of one mask's log, for the clips of
    ``wanted`` ({filename: (clip_digest, index in the fold)}); a row of another digest or index
    does not count (legacy rows, without a digest, are matched by name and index)."""
    have: dict[str, set] = {}
    for r in log.rows:
        fn = r["filename"]
        if fn in wanted and r.get("clip_digest") in (None, wanted[fn][0]) and int(r["sample"]) == wanted[fn][1]:
            have.setdefault(fn, set()).add(r["domain"])
    complete = {fn for fn, d in have.items() if set(domains) <= d}
    return complete, set(have) - complete


def _legacy(info: dict) -> bool:
    return bool(info) and "dataset" not in info


def _missing(csv_dir: Path, masks: list, wanted: dict, domains, repair: bool) -> dict:
    """``{mask: set of filenames still to compute}``; with ``repair``, first drop from each CSV its
    torn last line, duplicates and the rows of clips logged in only some domains (atomically, only
    when the file changes). Other masks' files and complete rows are never touched."""
    out = {}
    for m in masks:
        path = csv_dir / f"{m}.csv"
        log = read_log(path)
        complete, partial = _clip_status(log, wanted, domains)
        if repair and (not log.clean or partial) and path.is_file():
            write_log(path, [r for r in log.rows if r["filename"] not in partial])
        out[m] = set(wanted) - complete
    return out


def _finished_readonly(run_dir: Path, key: dict, identity: dict, masks: list, wanted: dict, domains) -> dict | None:
    """The run.json of a finished run whose every wanted clip is logged, read without writing; None
    when there is work to do. Raises ResultsError for another configuration or dataset."""
    info = read_json(run_dir / "run.json")
    if not info:
        logs = [p for p in (run_dir / "csvs").glob("*.csv") if read_log(p).rows]
        if logs:
            raise ResultsError(f"{run_dir} holds logs ({logs[0].name}, ...) but no run.json, so their configuration "
                               f"cannot be checked; nothing was overwritten: restore run.json or move the folder away")
        return None
    _check_run(run_dir, info, key, identity)
    missing = _missing(run_dir / "csvs", masks, wanted, domains, repair=False)
    return info if not any(missing.values()) else None


def _groups(missing: dict, order: list) -> list[tuple[list, list]]:
    """Clips grouped by the set of masks they miss: ``[(mask names, filenames in fold order)]``."""
    by_clip: dict[str, list] = {}
    for m, files in missing.items():
        for fn in files:
            by_clip.setdefault(fn, []).append(m)
    groups: dict[tuple, list] = {}
    for fn in order:
        if fn in by_clip:
            groups.setdefault(tuple(m for m in missing if m in by_clip[fn]), []).append(fn)
    return [(list(ms), fns) for ms, fns in groups.items()]


def run(cfg: RunConfig, progress: bool = True) -> dict:
    """Explain, mask and score every clip of the fold for every method (module docstring).

    Returns:
        ``{method: summary}`` with the run folder, clips done and timings per method, plus
        ``_accuracy`` (the model's accuracy under the condition, skipped clips excluded),
        ``_condition`` and ``_total_seconds``.

    Raises:
        ConfigError: unknown method/mask/condition/domain, bad numbers or noise level, missing
            noise file, a dataset whose classes are not the checkpoint's.
        CheckpointError: bad checkpoint or interpreter.
        DatasetError / AudioFileError: dataset, clip or noise file problems (the file is named).
        ResultsError: the results folder holds another run (configuration or data), another
            process is writing it, or it cannot be written (nothing is overwritten).
    """
    from tqdm.auto import tqdm

    cfg.validate()
    noise = cfg.noise
    t_start = time.perf_counter()
    model, extractor, ckpt = load_classifier(cfg.checkpoint)
    for p in model.parameters():
        p.requires_grad_(False)
    fcfg = extractor.cfg
    name = model_name(ckpt)
    ds = ESC50(cfg.root, (cfg.fold,), fcfg.sample_rate, fcfg.duration, on_bad_clip=cfg.on_bad_clip)
    if list(ckpt["class_names"]) != list(ds.class_names):
        raise ConfigError(f"{cfg.checkpoint} was trained on {len(ckpt['class_names'])} classes "
                          f"({', '.join(ckpt['class_names'][:4])}, ...), but the dataset {ds.root} has "
                          f"{len(ds.class_names)} ({', '.join(ds.class_names[:4])}, ...): they must be the same classes "
                          f"in the same order")
    identity = ds.identity()
    meta = read_meta(ds.root)
    fold_files = meta.loc[meta["fold"] == cfg.fold, "filename"].tolist()
    position = {fn: i for i, fn in enumerate(fold_files)}  # the clip's index in its fold: its seed
    filenames = ds.filenames
    digests = {fn: ds.clip_digest(i) for i, fn in enumerate(filenames)}
    n = len(ds) if cfg.limit is None else min(cfg.limit, len(ds))
    wanted_order = filenames[:n]
    wanted = {fn: (digests[fn], position[fn]) for fn in wanted_order}
    index = {fn: i for i, fn in enumerate(filenames)}
    ckpt_sha = file_sha256(cfg.checkpoint)
    masks_of = {m: ([NATIVE] if m in LEARNED else []) + cfg.mask_list for m in cfg.methods}
    run_dirs = {m: Path(cfg.results) / name / f"{m}_{noise.label}" for m in cfg.methods}
    keys = {m: _provenance_key(cfg, ckpt_sha, m, masks_of[m]) for m in cfg.methods}

    # Read-only pass: finished runs are recognised without writing anything.
    finished = {m: _finished_readonly(run_dirs[m], keys[m], identity, masks_of[m], wanted, cfg.domains)
                for m in cfg.methods}
    summaries = {}
    todo_methods = [m for m in cfg.methods if finished[m] is None]
    accuracy = None
    if todo_methods:
        make_folder(cfg.results)
        scorer = fuse_for_inference(model)  # BatchNorm folded into the convolutions: scoring passes only
        t0 = time.perf_counter()
        feats = condition_features(ds, fcfg, noise, progress=progress)
        t_features = time.perf_counter() - t0
        t0 = time.perf_counter()
        probs = class_probabilities(scorer, feats)
        t_base = time.perf_counter() - t0
        labels = ds.labels
        preds = probs.argmax(1).numpy()
        accuracy = float((preds == labels).mean())
        # Build every method before anything is written: a method that cannot be built (SHAP without
        # training folds, a missing interpreter) stops the run with one error and no files.
        explainers = {}
        for m in todo_methods:
            explainers[m] = make_method(m, model, features=fcfg, checkpoint=cfg.checkpoint, root=cfg.root,
                                        seed=cfg.seed, shap_nsamples=cfg.shap_nsamples,
                                        shap_background_per_class=cfg.shap_background_per_class,
                                        interpreter=cfg.interpreter(m) if m in LEARNED else None)
    for method in cfg.methods:
        out = run_dirs[method]
        masks = masks_of[method]
        if finished[method] is not None:
            info = finished[method]
            summaries[method] = {"folder": str(out), "n_clips_done": info.get("n_clips_done"), "clips_computed": 0,
                                 "seconds": 0.0, "finished": True}
            if accuracy is None:
                accuracy = next(iter(info.get("accuracy", {}).values()), float("nan"))
            continue
        explainer = explainers[method]
        with run_lock(out):
            previous = read_json(out / "run.json")
            _check_run(out, previous, keys[method], identity)
            if _legacy(previous):
                raise ResultsError(f"{out} was written before runs recorded their dataset's identity and is not "
                                   f"complete for these {n} clips; its rows cannot be verified against this dataset: "
                                   f"move it away (or pass another --results) to recompute")
            csv_dir = out / "csvs"
            make_folder(csv_dir)
            make_folder(out / "attributions")
            missing = _missing(csv_dir, masks, wanted, cfg.domains, repair=True)
            groups = _groups(missing, wanted_order)
            n_todo = len({fn for _, fns in groups for fn in fns})
            n_visits = sum(len(fns) for _, fns in groups)
            info = {"format": RUN_FORMAT, "key": keys[method], "dataset": identity, "model": name, "method": method,
                    "condition": noise.label, "noise": noise.describe(),
                    "config": {**asdict(cfg), "methods": [method]}, "checkpoint": str(cfg.checkpoint),
                    "interpreter": cfg.interpreter(method) if method in LEARNED else None,
                    "features": fcfg.to_dict(), "seed": cfg.seed, "device": "cpu",
                    "accuracy": {noise.label: accuracy}, "n_clips_fold": len(ds),
                    "skipped_clips": list(getattr(ds, "skipped", [])),
                    "versions": package_versions(), "git_commit": previous.get("git_commit", git_commit()),
                    "history": previous.get("history", [])}
            write_json(out / "run.json", {**info, "status": "running"})
            t_attr = t_fwd = t_audio = 0.0
            t_method = time.perf_counter()
            bar = tqdm(total=n_visits, desc=f"{name} {method} {noise.label}", disable=not progress)
            need_wav = "audio" in cfg.domains or has_native_mask(explainer)
            for group_masks, files in groups:
                for s in range(0, len(files), cfg.chunk):
                    chunk_files = files[s:s + cfg.chunk]
                    idx = [index[fn] for fn in chunk_files]
                    x = feats[idx]
                    target = torch.from_numpy(preds[idx])
                    t0 = time.perf_counter()
                    expl = explain(explainer, x, target, seeds=[position[fn] for fn in chunk_files],
                                   native=NATIVE in group_masks)
                    t_attr += time.perf_counter() - t0
                    for j, fn in enumerate(chunk_files):
                        path = out / "attributions" / f"{Path(fn).stem}.npy"
                        tmp = path.with_name(path.stem + ".tmp.npy")
                        with writing(path):
                            np.save(tmp, expl.attribution[j].cpu().numpy().astype(np.float16))
                            os.replace(tmp, path)
                    t0 = time.perf_counter()
                    m = mask_stack(expl, group_masks, fcfg, cfg.k, cfg.tau)
                    wav = noise.apply(ds.waveforms(idx), fcfg.sample_rate) if need_wav else None
                    n_nat = int(NATIVE in group_masks)
                    res = score_masks(scorer, probs[idx], x, wav, m, fcfg, cfg.domains, cfg.inversion,
                                      native=expl.native[:, None] if n_nat else None)
                    t_fwd += time.perf_counter() - t0 - res.seconds.get("audio", 0.0)
                    t_audio += res.seconds.get("audio", 0.0)
                    nm = len(group_masks)
                    for j, fn in enumerate(chunk_files):
                        if position[fn] < cfg.audio_examples and res.audio is not None:
                            folder = out / "audio" / Path(fn).stem
                            with writing(folder):
                                write_audio(folder / "clip.wav", wav[j], fcfg.sample_rate)
                                for k_i, mname in enumerate(group_masks):
                                    write_audio(folder / f"{mname}_in.wav", res.audio[j, k_i], fcfg.sample_rate)
                                    write_audio(folder / f"{mname}_out.wav", res.audio[j, nm + k_i], fcfg.sample_rate)
                    for k_i, mname in enumerate(group_masks):
                        rows = [{"sample": position[fn], "filename": fn, "clip_digest": digests[fn],
                                 "label": int(labels[index[fn]]), "pred": int(preds[index[fn]]),
                                 "is_correct": int(preds[index[fn]] == labels[index[fn]]), "domain": dom,
                                 "recon_snr_db": fmt_number(res.recon_snr_db[j]),
                                 **{mt: fmt_number(res.scores[dom][mt][j, k_i]) for mt in METRIC_NAMES}}
                                for dom in cfg.domains for j, fn in enumerate(chunk_files)
                                if fn in missing[mname]]
                        if rows:
                            append_log(csv_dir / f"{mname}.csv", rows)
                    bar.update(len(chunk_files))
            bar.close()
            elapsed = time.perf_counter() - t_method
            left = _missing(csv_dir, masks, wanted, cfg.domains, repair=False)
            n_done = len(set(wanted) - set().union(*left.values()))
            timing = {"clips_computed": n_todo, "seconds": round(elapsed, 2), "attribution_seconds": round(t_attr, 2),
                      "mask_forward_seconds": round(t_fwd, 2), "audio_domain_seconds": round(t_audio, 2),
                      "clips_per_second": round(n_todo / elapsed, 3) if n_todo and elapsed > 0 else None,
                      "features_seconds": round(t_features, 2), "base_forward_seconds": round(t_base, 3),
                      "limit": cfg.limit, "git_commit": git_commit(), "torch_threads": torch.get_num_threads(),
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            info["history"] = info["history"] + [timing]
            write_json(out / "run.json", {**info, "status": "complete" if n_done >= len(ds) else "partial",
                                          "n_clips_done": n_done, "timings": timing})
        summaries[method] = {"folder": str(out), "n_clips_done": n_done, **timing}
    summaries["_total_seconds"] = round(time.perf_counter() - t_start, 2)
    summaries["_accuracy"] = accuracy
    summaries["_condition"] = noise.label
    return summaries
