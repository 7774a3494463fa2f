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
from .config import csv_floats, csv_ints, csv_list, json_object, key_values, option, optional
from .data import (
    ESC50,
    TRAIN_FOLDS,
    cached_tensor,
    clips_sha256,
    code_version,
    content_key,
    read_meta,
    transform_version,
)
from .devices import DEVICE_CHOICES, describe_device, resolve_device
from .errors import AudioFileError, CheckpointError, ConfigError, DatasetError, ResultsError, unknown_name
from .interpret import (
    CAPTUM_PREFIX,
    LEARNED,
    METHODS,
    check_method,
    has_native_mask,
    make_method,
    shap_background,
    stratified_background,
)
from .masks import DEFAULT_K, DEFAULT_TAU, MASK_RULES, NATIVE, mask_names
from .metrics import METRIC_NAMES
from .models import fuse_for_inference, load_classifier, model_name
from .noise import CONDITIONS, NoiseSpec, mixture_partners
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
    train_folds: tuple = option(TRAIN_FOLDS, parse=csv_ints, help="the training folds (SHAP's background), "
                                                                   "comma-separated")
    metadata: str = option("esc50.csv", help="the dataset's csv under meta/ (another dataset laid out like ESC-50)")
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
    lime_nsamples: int = option(300, help="LIME's samples (forward passes) per clip: 300 agrees with 1000 as well as "
                                        "two 1000-sample maps agree (scripts/lime_samples.py); the prior art's 1000 "
                                        "for make reproduce")
    lime_segmentation: str = option("quickshift", choices=("quickshift", "grid"),
                                    help="LIME's superpixels: quickshift (the prior art) or a time-frequency grid")
    lime_grid: tuple = option((8, 50), parse=csv_ints, help="LIME grid patch (frequency rows, frames)")
    method_args: dict = option(default_factory=dict, parse=json_object, metavar="JSON",
                               help="per-method arguments, e.g. '{\"captum:Occlusion\": {\"sliding_window_shapes\": "
                                    "[8, 25]}}' (captum classes' constructor and attribute arguments)")
    device: str = option("auto", parse=str, choices=DEVICE_CHOICES,
                         help="where the classifier, the attribution methods and the scoring run: auto (CUDA when "
                              "available), cpu, cuda, cuda:N, mps")
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
        if isinstance(self.method_args, str):
            self.method_args = json_object(self.method_args)
        if not isinstance(self.method_args, dict):
            raise ConfigError(f"method_args must be a dict {{method: {{argument: value}}}}, got {self.method_args!r}")
        for m, a in self.method_args.items():
            if m not in self.methods:
                raise ConfigError(f"method_args: {m!r} is given but not among the methods {self.methods}")
            if not isinstance(a, dict):
                raise ConfigError(f"method_args[{m!r}] must be a dict of arguments, got {a!r}")
        if isinstance(self.lime_nsamples, bool) or not isinstance(self.lime_nsamples, (int, np.integer)) \
                or self.lime_nsamples < 2:
            raise ConfigError(f"lime_nsamples must be an integer >= 2, got {self.lime_nsamples!r}")
        if self.lime_segmentation not in ("quickshift", "grid"):
            raise unknown_name("LIME segmentation", self.lime_segmentation, ("quickshift", "grid"))
        self.lime_grid = tuple(int(v) for v in self.lime_grid)
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
        return NoiseSpec(str(self.condition), self.alpha, self.snr_db, self.noise_offset, seed=self.seed)

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
    if any(m.startswith("topK_") and m.endswith("_pos") for m in masks):
        key["mask_rules"] = MASK_RULES  # topK_k_pos keeps ties since issue 12 (masks.MASK_RULES)
    if noise and noise.get("seed") is not None and cfg.noise.is_mixture:
        key["mixture_seed"] = noise["seed"]
    if method in LEARNED:
        key["interpreter_sha256"] = file_sha256(cfg.interpreter(method))
    if method == "shap":
        key.update(seed=cfg.seed, shap_nsamples=cfg.shap_nsamples,
                   shap_background_per_class=cfg.shap_background_per_class,
                   **({"train_folds": list(cfg.train_folds)} if tuple(cfg.train_folds) != TRAIN_FOLDS else {}))
    if method == "lime":
        key.update(seed=cfg.seed, lime_nsamples=cfg.lime_nsamples, lime_segmentation=cfg.lime_segmentation,
                   **({"lime_grid": list(cfg.lime_grid)} if cfg.lime_segmentation == "grid" else {}))
    if method.startswith(CAPTUM_PREFIX):
        key.update(seed=cfg.seed, method_args=cfg.method_args.get(method, {}))
    return key


def method_variant(cfg: RunConfig, method: str) -> str:
    """The method's settings that differ from :class:`RunConfig`'s defaults, as a short tag: ``""``
    at the defaults, e.g. ``n1000`` for LIME with 1000 samples, ``n128`` for SHAP with 128 draws,
    ``grid8x50`` for LIME on a grid, ``args-<hash>`` for a captum class with arguments. Runs with
    other settings of a method get their own run folder and their own row in the tables
    (:func:`method_label`), so both can live in one results folder."""
    import hashlib
    import json

    parts = []
    if method == "lime":
        if cfg.lime_nsamples != RunConfig.lime_nsamples:
            parts.append(f"n{cfg.lime_nsamples}")
        if cfg.lime_segmentation != RunConfig.lime_segmentation:
            parts.append(f"{cfg.lime_segmentation}{'x'.join(map(str, cfg.lime_grid))}")
    if method == "shap" and cfg.shap_nsamples != RunConfig.shap_nsamples:
        parts.append(f"n{cfg.shap_nsamples}")
    args = cfg.method_args.get(method) if isinstance(cfg.method_args, dict) else None
    if args:
        parts.append("args-" + hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()[:8])
    return "-".join(parts)


def method_label(method: str, variant: str) -> str:
    """The method's name in the tables: ``lime``, or ``lime (n1000)`` for a variant."""
    return f"{method} ({variant})" if variant else method


def run_folder_name(method: str, condition_label: str, variant: str = "") -> str:
    """``<method>[-<variant>]_<condition>``, the method's name made file-name safe (``captum:Occlusion``
    -> ``captum-Occlusion``); run.json keeps the method's real name and its table label."""
    return f"{method.replace(':', '-')}{'-' + variant if variant else ''}_{condition_label}"


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


def missing_clips(csv_dir: Path, masks: list, wanted: dict, domains, repair: bool) -> dict:
    """``{mask: set of filenames still to compute}`` of a run folder's ``csvs/``.

    With ``repair``, first drop from each CSV its torn last line, duplicates and the rows of clips
    logged in only some domains (atomically, only when the file changes). Other masks' files and
    complete rows are never touched.

    Args:
        csv_dir: the run folder's ``csvs``; masks: mask names; wanted: ``{filename: (clip_digest,
            index in the fold)}`` of the clips asked for; domains: the scoring domains.

    Raises:
        ResultsError: a CSV that cannot be read or repaired (named).
    """
    out = {}
    for m in masks:
        path = csv_dir / f"{m}.csv"
        log = read_log(path)
        complete, partial = _clip_status(log, wanted, domains)
        if repair and (not log.clean or partial) and path.is_file():
            write_log(path, [r for r in log.rows if r["filename"] not in partial])
        out[m] = set(wanted) - complete
    return out


def finished_readonly(run_dir: Path, key: dict, identity: dict, masks: list, wanted: dict, domains) -> dict | None:
    """The run.json of a finished run whose every wanted clip is logged, read without writing; None
    when there is work to do.

    Raises:
        ResultsError: the folder holds another configuration or dataset, or logs without run.json.
    """
    info = read_json(run_dir / "run.json")
    if not info:
        logs = [p for p in (run_dir / "csvs").glob("*.csv") if read_log(p).rows]
        if logs:
            raise ResultsError(f"{run_dir} holds logs ({logs[0].name}, ...) but no run.json, so their configuration "
                               f"cannot be checked; nothing was overwritten: restore run.json or move the folder away")
        return None
    _check_run(run_dir, info, key, identity)
    missing = missing_clips(run_dir / "csvs", masks, wanted, domains, repair=False)
    return info if not any(missing.values()) else None


def clip_groups(missing: dict, order: list) -> list[tuple[list, list]]:
    """Clips grouped by the set of masks they miss: ``[(mask names, filenames in fold order)]``
    (groups in the order of their first clip). Every clip of a group misses every mask of it."""
    by_clip: dict[str, list] = {}
    for m, files in missing.items():
        for fn in files:
            by_clip.setdefault(fn, []).append(m)
    groups: dict[tuple, list] = {}
    for fn in order:
        if fn in by_clip:
            groups.setdefault(tuple(m for m in missing if m in by_clip[fn]), []).append(fn)
    return [(list(ms), fns) for ms, fns in groups.items()]


# ---------------------------------------------------------------------------------------------
# The prepared context and the one per-clip compute path (shared by run and the grid)


class RunContext:
    """Everything the per-clip compute path needs for one (checkpoint, condition, fold): the
    classifier, the dataset and its identity, the run folders and configuration keys of every
    method; lazily, the condition's features, the class probabilities and the method objects.

    :func:`run` builds one per call; the grid (:mod:`audiointerp.grid`) builds one in the driver
    (planning: identity, folders, keys — no features) and one per worker process and (checkpoint,
    condition) (computing: features from the content-addressed cache, the probabilities handed
    over from the cell's preparation task, methods built once and reused by every task).

    Args:
        cfg: the run's configuration (validated here).
        tolerate_bad: only for the grid with ``on_bad_clip="error"``: a bad clip found while
            computing the features does not stop the context; the features are computed for the
            other clips, and :attr:`bad` maps the bad clip's file name to its error message, so
            only the task holding it fails (:meth:`check_clips`).

    Attributes:
        cfg, noise (:class:`~audiointerp.noise.NoiseSpec`), model (eval, frozen), fcfg (the
        :class:`~audiointerp.processing.FeatureConfig`), ckpt (the checkpoint dict), name (the
        model's folder name), ds (the fold as :func:`run` opens it), identity
        (:meth:`audiointerp.data.ESC50.identity`), position (``{filename: index in the fold}``, also
        the clip's seed), digests (``{filename: first 16 hex digits of its SHA-256}``),
        wanted_order (the clips asked for, ``limit`` applied, in fold order), wanted
        (``{filename: (digest, position)}``), ckpt_sha (the checkpoint's SHA-256), masks_of
        (``{method: mask names}``, ``native`` first for learned methods), run_dirs (``{method: run
        folder}``), keys (``{method: configuration key}``), seconds (``features``, ``base_forward``:
        the shared work's wall time in this process), bad (``{filename: reason}``).

    Raises:
        ConfigError / CheckpointError / DatasetError: as :func:`run` (validation, checkpoint,
            dataset, classes other than the checkpoint's).
    """

    def __init__(self, cfg: RunConfig, tolerate_bad: bool = False):
        cfg.validate()
        self.cfg, self.noise = cfg, cfg.noise
        self.device = resolve_device(cfg.device)
        model, extractor, ckpt = load_classifier(cfg.checkpoint, device=self.device)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model, self.fcfg, self.ckpt, self.name = model, extractor.cfg, ckpt, model_name(ckpt)
        fcfg = self.fcfg
        ds = ESC50(cfg.root, (cfg.fold,), fcfg.sample_rate, fcfg.duration, on_bad_clip=cfg.on_bad_clip,
                   metadata=cfg.metadata)
        if list(ckpt["class_names"]) != list(ds.class_names):
            raise ConfigError(f"{cfg.checkpoint} was trained on {len(ckpt['class_names'])} classes "
                              f"({', '.join(ckpt['class_names'][:4])}, ...), but the dataset {ds.root} has "
                              f"{len(ds.class_names)} ({', '.join(ds.class_names[:4])}, ...): they must be the same "
                              f"classes in the same order")
        self.ds = ds
        self.identity = ds.identity()
        meta = read_meta(ds.root, cfg.metadata)
        fold_files = meta.loc[meta["fold"] == cfg.fold, "filename"].tolist()
        self.position = {fn: i for i, fn in enumerate(fold_files)}  # the clip's index in its fold: its seed
        self.digests = {fn: ds.clip_digest(i) for i, fn in enumerate(ds.filenames)}
        n = len(ds) if cfg.limit is None else min(cfg.limit, len(ds))
        self.wanted_order = ds.filenames[:n]
        self.wanted = {fn: (self.digests[fn], self.position[fn]) for fn in self.wanted_order}
        self.ckpt_sha = file_sha256(cfg.checkpoint)
        self.masks_of = {m: ([NATIVE] if m in LEARNED else []) + cfg.mask_list for m in cfg.methods}
        self.variants = {m: method_variant(cfg, m) for m in cfg.methods}
        self.run_dirs = {m: Path(cfg.results) / self.name / run_folder_name(m, self.noise.label, self.variants[m])
                         for m in cfg.methods}
        self.keys = {m: _provenance_key(cfg, self.ckpt_sha, m, self.masks_of[m]) for m in cfg.methods}
        self.tolerate_bad = tolerate_bad
        self.bad: dict[str, str] = {}
        self.seconds = {"features": 0.0, "base_forward": 0.0}
        self._feature_ds = ds
        self._feats = self._probs = self._scorer = None
        self._methods: dict = {}
        self._index = None

    # -- shared work, computed on first use -------------------------------------------------

    @property
    def feature_dataset(self) -> ESC50:
        """The clips whose features are computed: :attr:`ds`, less the bad clips when tolerated."""
        return self._feature_ds

    @property
    def index(self) -> dict:
        """``{filename: row of}`` :attr:`features`, :attr:`probabilities`, :attr:`labels`."""
        if self._index is None:
            self._index = {fn: i for i, fn in enumerate(self._feature_ds.filenames)}
        return self._index

    def features(self, progress: bool = False) -> torch.Tensor:
        """float32 ``[n_clips, 1, F, T]`` (dB) of the fold under the condition
        (:func:`audiointerp.scoring.condition_features`: content-addressed on-disk cache).

        Raises:
            DatasetError / AudioFileError: a missing or bad clip (named), unless tolerated.
        """
        if self._feats is None:
            t0 = time.perf_counter()
            try:
                feats = condition_features(self._feature_ds, self.fcfg, self.noise, progress=progress)
            except (AudioFileError, DatasetError):
                if not (self.tolerate_bad and self.cfg.on_bad_clip == "error"):
                    raise
                self._use_good_clips()
                feats = condition_features(self._feature_ds, self.fcfg, self.noise, progress=progress)
            self._feats = feats.to(self.device)  # on the device for the whole run: no per-clip transfers
            self.seconds["features"] = time.perf_counter() - t0
        return self._feats

    def _use_good_clips(self) -> None:
        """Tolerated bad clips: the features come from the fold less its bad clips (each decoded
        once), and :attr:`bad` names them with their errors."""
        import warnings

        cfg, fcfg = self.cfg, self.fcfg
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            good = ESC50(cfg.root, (cfg.fold,), fcfg.sample_rate, fcfg.duration, on_bad_clip="skip",
                         metadata=cfg.metadata)
        self.bad = {s["filename"]: s["reason"] for s in good.skipped}
        self._feature_ds, self._index, self._feats, self._probs = good, None, None, None

    def use_bad_clips(self, bad: dict) -> None:
        """Adopt the bad clips another process found (the grid's preparation task), so that this
        context reads the same cache entry without decoding the fold again."""
        if bad and not self.bad:
            self._use_good_clips()

    @property
    def scorer(self):
        """The classifier with BatchNorm folded into the convolutions (scoring passes only)."""
        if self._scorer is None:
            self._scorer = fuse_for_inference(self.model)
        return self._scorer

    def probabilities(self) -> torch.Tensor:
        """float32 ``[n_clips, n_classes]``: softmax of the classifier's logits of :meth:`features`
        (:func:`audiointerp.scoring.class_probabilities`, at this process's torch thread count)."""
        if self._probs is None:
            feats = self.features()
            t0 = time.perf_counter()
            self._probs = class_probabilities(self.scorer, feats)
            self.seconds["base_forward"] = time.perf_counter() - t0
        return self._probs

    def use_probabilities(self, probs: torch.Tensor) -> None:
        """Adopt probabilities computed elsewhere (the grid's preparation task: one forward pass of
        the fold per cell, not per task). Shape ``[n_clips, n_classes]`` of :attr:`feature_dataset`.

        Raises:
            ResultsError: a shape other than this context's clips.
        """
        if tuple(probs.shape) != (len(self._feature_ds), len(self.ckpt["class_names"])):
            raise ResultsError(f"probabilities of shape {tuple(probs.shape)} do not fit the {len(self._feature_ds)} "
                               f"clips of {self.ds.root} fold {self.cfg.fold}")
        self._probs = probs.to(self.device)

    @property
    def labels(self) -> np.ndarray:
        """int64 ``[n_clips]`` labels of :attr:`feature_dataset`."""
        return self._feature_ds.labels

    @property
    def preds(self) -> np.ndarray:
        """int64 ``[n_clips]``: the explained class of each clip (argmax of the probabilities)."""
        return self.probabilities().argmax(1).cpu().numpy()

    @property
    def accuracy(self) -> float:
        """The classifier's accuracy under the condition (bad or skipped clips excluded)."""
        return float((self.preds == self.labels).mean())

    def shap_background(self) -> torch.Tensor:
        """SHAP's background features ``[n_bg, 1, F, T]``
        (:func:`audiointerp.interpret.shap_background`), computed once per (training clips,
        feature configuration, per-class count, seed) in the content-addressed cache, so that
        every task and process reuses it instead of loading the training folds' features.

        Raises:
            DatasetError: the training folds hold no clips (named).
        """
        cfg, fcfg = self.cfg, self.fcfg

        def compute():
            return shap_background(cfg.root, fcfg, cfg.shap_background_per_class, cfg.seed, folds=cfg.train_folds,
                                   metadata=cfg.metadata)

        try:
            train = ESC50(cfg.root, cfg.train_folds, fcfg.sample_rate, fcfg.duration, metadata=cfg.metadata)
        except DatasetError:  # let shap_background raise its own, clearer error
            return compute()
        n_bg = len(stratified_background(train.labels, cfg.shap_background_per_class, cfg.seed))
        key = content_key({"kind": "shap-background", "clips_sha256": clips_sha256(train.filenames, train.digests),
                           "features": fcfg.to_dict(), "sample_rate": train.sample_rate, "duration": train.duration,
                           "per_class": cfg.shap_background_per_class, "seed": cfg.seed,
                           "transform": transform_version(), "choice": code_version("interpret.py")})
        return cached_tensor(f"shap-background-{fcfg.kind}", key, compute, (n_bg, *fcfg.shape), field="background")

    def method(self, name: str):
        """The attribution method ``name`` (:func:`audiointerp.interpret.make_method`), built once.

        Raises:
            DatasetError: SHAP without training folds; CheckpointError: a bad interpreter.
        """
        if name not in self._methods:
            cfg = self.cfg
            extra = {"background": self.shap_background()} if name == "shap" else {}
            self._methods[name] = make_method(name, self.model, features=self.fcfg, checkpoint=cfg.checkpoint,
                                              root=cfg.root, seed=cfg.seed, shap_nsamples=cfg.shap_nsamples,
                                              shap_background_per_class=cfg.shap_background_per_class,
                                              interpreter=cfg.interpreter(name) if name in LEARNED else None,
                                              lime_nsamples=cfg.lime_nsamples, lime_segmentation=cfg.lime_segmentation,
                                              lime_grid=cfg.lime_grid, method_args=cfg.method_args.get(name, {}),
                                              **extra)
        return self._methods[name]

    # -- run folders ---------------------------------------------------------------------------

    def finished(self, method: str) -> dict | None:
        """The run.json of ``method``'s folder when every wanted clip is logged (read without writing
        anything), else None (:func:`finished_readonly`)."""
        return finished_readonly(self.run_dirs[method], self.keys[method], self.identity, self.masks_of[method],
                                 self.wanted, self.cfg.domains)

    def check_folder(self, method: str) -> dict:
        """Under the folder's writer lock: the previous run.json of ``method``'s folder, after
        checking that it holds this configuration and data and is not a legacy run.

        Raises:
            ResultsError: another configuration or dataset; a legacy folder that is not complete.
        """
        out = self.run_dirs[method]
        previous = read_json(out / "run.json")
        _check_run(out, previous, self.keys[method], self.identity)
        if _legacy(previous):
            raise ResultsError(f"{out} was written before runs recorded their dataset's identity and is not "
                               f"complete for these {len(self.wanted)} clips; its rows cannot be verified against "
                               f"this dataset: move it away (or pass another --results) to recompute")
        return previous

    def run_info(self, method: str, previous: dict, accuracy) -> dict:
        """The run.json record of ``method``'s folder (without status, counts and timings)."""
        cfg, noise = self.cfg, self.noise
        return {"format": RUN_FORMAT, "key": self.keys[method], "dataset": self.identity, "model": self.name,
                "method": method, "method_label": method_label(method, self.variants[method]), "condition": noise.label, "noise": noise.describe(),
                "config": {**asdict(cfg), "methods": [method]}, "checkpoint": str(cfg.checkpoint),
                "interpreter": cfg.interpreter(method) if method in LEARNED else None,
                "features": self.fcfg.to_dict(), "seed": cfg.seed, "device": describe_device(self.device),
                "accuracy": {noise.label: accuracy}, "n_clips_fold": len(self.ds),
                "skipped_clips": list(getattr(self.ds, "skipped", [])),
                "versions": package_versions(), "git_commit": previous.get("git_commit", git_commit()),
                "history": previous.get("history", [])}

    def finish_info(self, method: str, info: dict, timing: dict) -> int:
        """Write ``method``'s final run.json (status, clips done, ``timing`` appended to the history);
        returns the number of wanted clips now logged for every mask."""
        out = self.run_dirs[method]
        left = missing_clips(out / "csvs", self.masks_of[method], self.wanted, self.cfg.domains, repair=False)
        n_done = len(set(self.wanted) - set().union(*left.values()))
        info["history"] = info["history"] + [timing]
        write_json(out / "run.json", {**info, "status": "complete" if n_done >= len(self.ds) else "partial",
                                      "n_clips_done": n_done, "timings": timing})
        return n_done

    def condition_waveforms(self, idx) -> torch.Tensor:
        """float32 ``[len(idx), n_samples]``: the clips ``idx`` of :attr:`feature_dataset` as the model
        hears them under the condition (``mixture``: with each clip's seeded partner,
        :func:`audiointerp.noise.mixture_partners`, as the features were computed)."""
        wav = self._feature_ds.waveforms(idx).to(self.device)
        if self.noise.is_mixture:
            if getattr(self, "_partners", None) is None or len(self._partners) != len(self._feature_ds):
                self._partners = mixture_partners(self._feature_ds.labels, self.noise.seed)
            partners = self._feature_ds.waveforms(self._partners[idx]).to(self.device)
            return self.noise.apply(wav, self.fcfg.sample_rate, partners=partners)
        return self.noise.apply(wav, self.fcfg.sample_rate)

    def check_clips(self, files) -> None:
        """Raise the error of the first tolerated bad clip among ``files`` (AudioFileError or
        DatasetError naming the file)."""
        for fn in files:
            if fn in self.bad:
                reason = self.bad[fn]
                raise (DatasetError if "missing" in reason else AudioFileError)(reason)


@dataclass
class ChunkResult:
    """What :func:`score_clips` yields per chunk.

    Attributes:
        files: the chunk's file names (fold order).
        rows: ``{mask: [row dict over results_io.CSV_COLUMNS]}``, each mask's rows in the order they
            are logged: domain by domain, clips in chunk order (values formatted as written).
        seconds: ``attribution``, ``mask_forward`` (masking and the spectrogram-domain passes) and
            ``audio`` (the audio domain) wall time.
    """

    files: list
    rows: dict
    seconds: dict


def score_clips(ctx: RunContext, method: str, files: list, masks: list, out: Path):
    """The per-clip compute path of :func:`run` and of the grid's tasks: explain, mask and score
    ``files`` for ``method``, ``ctx.cfg.chunk`` clips per batch, in the order given.

    Per chunk: :func:`audiointerp.scoring.explain` (seeded per clip by its index in the fold),
    the float16 attribution map of each clip to ``<out>/attributions/<clip>.npy`` (atomic),
    :func:`~audiointerp.scoring.mask_stack`, the clips under the condition (audio domain and native
    masks), :func:`~audiointerp.scoring.score_masks`, the audio of the first ``audio_examples``
    clips to ``<out>/audio/<clip>/``, and the rows of every mask. A chunk's numbers depend only on
    its clips (and the torch thread count), so a grid whose shards are multiples of the chunk
    gives byte-identical rows.

    Args:
        ctx: the prepared context; method: a method of ``ctx.cfg.methods``.
        files: file names of ``ctx.wanted_order``; masks: mask names (``native`` for a learned
            method's own mask).
        out: the folder that receives ``attributions/`` (it must exist) and ``audio/``.

    Yields:
        a :class:`ChunkResult` per chunk, after its files are written.

    Raises:
        ResultsError: a file cannot be written (named). ConfigError: ``native`` for a method
        without its own mask.
    """
    cfg, fcfg = ctx.cfg, ctx.fcfg
    explainer = ctx.method(method)
    feats, probs, preds, labels, index = ctx.features(), ctx.probabilities(), ctx.preds, ctx.labels, ctx.index
    position, digests = ctx.position, ctx.digests
    need_wav = "audio" in cfg.domains or has_native_mask(explainer)
    nm = len(masks)
    for s in range(0, len(files), cfg.chunk):
        chunk_files = files[s:s + cfg.chunk]
        idx = [index[fn] for fn in chunk_files]
        x = feats[idx]
        target = torch.from_numpy(preds[idx])
        t0 = time.perf_counter()
        expl = explain(explainer, x, target, seeds=[position[fn] for fn in chunk_files], native=NATIVE in masks)
        t_attr = time.perf_counter() - t0
        for j, fn in enumerate(chunk_files):
            path = out / "attributions" / f"{Path(fn).stem}.npy"
            tmp = path.with_name(path.stem + ".tmp.npy")
            with writing(path):
                np.save(tmp, expl.attribution[j].cpu().numpy().astype(np.float16))
                os.replace(tmp, path)
        t0 = time.perf_counter()
        m = mask_stack(expl, masks, fcfg, cfg.k, cfg.tau)
        wav = ctx.condition_waveforms(idx) if need_wav else None
        res = score_masks(ctx.scorer, probs[idx], x, wav, m, fcfg, cfg.domains, cfg.inversion,
                          native=expl.native[:, None] if NATIVE in masks else None)
        t_audio = res.seconds.get("audio", 0.0)
        t_fwd = time.perf_counter() - t0 - t_audio
        for j, fn in enumerate(chunk_files):
            if position[fn] < cfg.audio_examples and res.audio is not None:
                folder = out / "audio" / Path(fn).stem
                with writing(folder):
                    write_audio(folder / "clip.wav", wav[j], fcfg.sample_rate)
                    for k_i, mname in enumerate(masks):
                        write_audio(folder / f"{mname}_in.wav", res.audio[j, k_i], fcfg.sample_rate)
                        write_audio(folder / f"{mname}_out.wav", res.audio[j, nm + k_i], fcfg.sample_rate)
        rows = {mname: [{"sample": position[fn], "filename": fn, "clip_digest": digests[fn],
                         "label": int(labels[index[fn]]), "pred": int(preds[index[fn]]),
                         "is_correct": int(preds[index[fn]] == labels[index[fn]]), "domain": dom,
                         "recon_snr_db": fmt_number(res.recon_snr_db[j]),
                         **{mt: fmt_number(res.scores[dom][mt][j, k_i]) for mt in METRIC_NAMES}}
                        for dom in cfg.domains for j, fn in enumerate(chunk_files)]
                for k_i, mname in enumerate(masks)}
        yield ChunkResult(chunk_files, rows, {"attribution": t_attr, "mask_forward": t_fwd, "audio": t_audio})


def timing_record(clips: int, seconds: float, parts: dict, ctx_seconds: dict, limit, threads: int, **extra) -> dict:
    """One entry of run.json's ``history``: clips computed, wall seconds, their split
    (``attribution``, ``mask_forward``, ``audio`` seconds), the shared work (``features``,
    ``base_forward`` seconds), the limit, git commit, torch threads and the finishing time."""
    return {"clips_computed": clips, "seconds": round(seconds, 2),
            "attribution_seconds": round(parts.get("attribution", 0.0), 2),
            "mask_forward_seconds": round(parts.get("mask_forward", 0.0), 2),
            "audio_domain_seconds": round(parts.get("audio", 0.0), 2),
            "clips_per_second": round(clips / seconds, 3) if clips and seconds > 0 else None,
            "features_seconds": round(ctx_seconds.get("features", 0.0), 2),
            "base_forward_seconds": round(ctx_seconds.get("base_forward", 0.0), 3),
            "limit": limit, "git_commit": git_commit(), "torch_threads": threads, **extra,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


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

    t_start = time.perf_counter()
    ctx = RunContext(cfg)
    # Read-only pass: finished runs are recognised without writing anything.
    finished = {m: ctx.finished(m) for m in cfg.methods}
    summaries = {}
    todo_methods = [m for m in cfg.methods if finished[m] is None]
    accuracy = None
    if todo_methods:
        make_folder(cfg.results)
        ctx.features(progress=progress)
        accuracy = ctx.accuracy
        # Build every method before anything is written: a method that cannot be built (SHAP without
        # training folds, a missing interpreter) stops the run with one error and no files.
        for m in todo_methods:
            ctx.method(m)
    for method in cfg.methods:
        out = ctx.run_dirs[method]
        masks = ctx.masks_of[method]
        if finished[method] is not None:
            info = finished[method]
            summaries[method] = {"folder": str(out), "n_clips_done": info.get("n_clips_done"), "clips_computed": 0,
                                 "seconds": 0.0, "finished": True}
            if accuracy is None:
                accuracy = next(iter(info.get("accuracy", {}).values()), float("nan"))
            continue
        with run_lock(out):
            previous = ctx.check_folder(method)
            csv_dir = out / "csvs"
            make_folder(csv_dir)
            make_folder(out / "attributions")
            missing = missing_clips(csv_dir, masks, ctx.wanted, cfg.domains, repair=True)
            groups = clip_groups(missing, ctx.wanted_order)
            n_todo = len({fn for _, fns in groups for fn in fns})
            n_visits = sum(len(fns) for _, fns in groups)
            info = ctx.run_info(method, previous, accuracy)
            write_json(out / "run.json", {**info, "status": "running"})
            parts = {"attribution": 0.0, "mask_forward": 0.0, "audio": 0.0}
            t_method = time.perf_counter()
            bar = tqdm(total=n_visits, desc=f"{ctx.name} {method} {ctx.noise.label}", disable=not progress)
            for group_masks, files in groups:
                for piece in score_clips(ctx, method, files, group_masks, out):
                    for part, sec in piece.seconds.items():
                        parts[part] += sec
                    for mname in group_masks:
                        if piece.rows[mname]:
                            append_log(csv_dir / f"{mname}.csv", piece.rows[mname])
                    bar.update(len(piece.files))
            bar.close()
            timing = timing_record(n_todo, time.perf_counter() - t_method, parts, ctx.seconds, cfg.limit,
                                   torch.get_num_threads())
            n_done = ctx.finish_info(method, info, timing)
        summaries[method] = {"folder": str(out), "n_clips_done": n_done, **timing}
    summaries["_total_seconds"] = round(time.perf_counter() - t_start, 2)
    summaries["_accuracy"] = accuracy
    summaries["_condition"] = ctx.noise.label
    return summaries
