"""The experiment runner: explain every clip of a fold, mask, score and log.

For a checkpoint, a list of methods, a listening condition and a fold, :func:`run` writes per
method::

    <results>/<model>/<method>_<condition>/
        run.json                 config, noise, package versions, git commit, seed, timings,
                                 the model's accuracy under the condition
        attributions/<clip>.npy  float16 attribution map [1, n_freq, n_frames] per clip
        csvs/<mask>.csv          two rows per clip, one per domain: sample, filename, label,
                                 pred, is_correct, domain, recon_snr_db, FF, AI, AD, AG, FidIn,
                                 SPS, COMP
        audio/<clip>/*.wav       (``audio_examples`` clips only) the clip, and x_in / x_out of
                                 every mask as audio, at the model's sample rate

The condition is ``clean`` or background noise mixed in (:mod:`audiointerp.noise`); the
clean-trained model explains and is scored on the noisy mixes. Every mask is scored in two
domains: ``spectrogram`` (the masked features x_in / x_out go to the model as they are) and
``audio`` (x_in / x_out are re-synthesised to audio with the clip's own STFT phase,
:func:`audiointerp.processing.resynthesise`, and the model hears features recomputed from that
audio: the listenable interpretation). ``recon_snr_db`` is the SNR of the unmasked clip after
the same re-synthesis.

Clips are processed in chunks; all masks of the chunk's clips (x_in and x_out of every mask)
go through the model in one batch per domain. After each chunk, its rows are appended to every mask's
CSV. A run killed at any point resumes where it stopped: on start, each CSV is read back, torn
or duplicated rows are dropped, clips missing from any CSV are removed from all and recomputed
(attribution draws are seeded per clip, so recomputation is identical), so no clip is lost or
written twice. A results folder holding a run with another configuration is never
overwritten (:class:`~audiointerp.errors.ResultsError`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio_io import write_audio
from .data import ESC50, TRAIN_FOLDS, fold_features
from .errors import CheckpointError, ConfigError, ResultsError, unknown_name
from .fit import predict_logits
from .interpret import LEARNED, METHODS, make_method, stratified_background
from .learned import default_interpreter_path, magnitude_features, masked_audio, masked_magnitude, to_feature_grid
from .masks import DEFAULT_K, DEFAULT_TAU, NATIVE, apply_mask, check_fraction, make_masks, mask_names
from .metrics import METRIC_NAMES, comp, score, sps
from .models import fuse_for_inference, load_classifier, model_name
from .provenance import file_sha256, git_commit, package_versions
from .noise import NoiseSpec
from .processing import INVERSIONS, features, features_only, reconstruction_snr_db, resynthesise, stft

DOMAINS = ("spectrogram", "audio")
CSV_COLUMNS = ["sample", "filename", "label", "pred", "is_correct", "domain", "recon_snr_db", *METRIC_NAMES]


@dataclass
class RunConfig:
    """What :func:`run` computes.

    Attributes:
        checkpoint: classifier checkpoint path.
        methods: attribution methods (``saliency``, ``gradcam``, ``shap``, ``piq``, ``l2i``).
        interpreters: checkpoint of each learned method (``{"piq": path, "l2i": path}``); a method
            not listed uses ``<classifier folder>/<method>_<classifier stem>.pt``
            (:func:`audiointerp.learned.default_interpreter_path`).
        condition: listening condition: ``clean``, a noise of
            :data:`audiointerp.noise.CONDITIONS` (``white``, ``room``, ``horse``, ``white_gen``,
            ``pink``) or a noise file path.
        alpha: clip weight in the mix (None: 0.6); or snr_db: clip-to-noise ratio in dB.
        noise_offset: seconds skipped at the start of the noise file.
        domains: ``spectrogram`` and/or ``audio`` (both by default).
        inversion: how masked features become audio (``gain`` or ``pinv``,
            :func:`audiointerp.processing.resynthesise`).
        audio_examples: write the audio of the first N clips' masks (0: none).
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
    interpreters: dict = field(default_factory=dict)
    condition: str = "clean"
    alpha: float | None = None
    snr_db: float | None = None
    noise_offset: float = 0.0
    domains: tuple = DOMAINS
    inversion: str = "gain"
    audio_examples: int = 0
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
        self.noise.validate()
        for m in self.methods:
            if m in LEARNED and not Path(self.interpreter(m)).is_file():
                raise CheckpointError(f"no {m} interpreter for {self.checkpoint}: {self.interpreter(m)} is missing; "
                                      f"train one with notebooks/train_{m}.ipynb or pass its path in interpreters")
        if isinstance(self.domains, str):
            self.domains = tuple(d for d in self.domains.split(",") if d)
        self.domains = tuple(self.domains)
        if not self.domains:
            raise ConfigError(f"no domains given; valid domains: {', '.join(DOMAINS)}")
        for d in self.domains:
            if d not in DOMAINS:
                raise unknown_name("domain", d, DOMAINS)
        if self.inversion not in INVERSIONS:
            raise unknown_name("inversion", self.inversion, INVERSIONS)
        if not isinstance(self.audio_examples, int) or self.audio_examples < 0:
            raise ConfigError(f"audio_examples must be an integer >= 0, got {self.audio_examples!r}")
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
    def noise(self) -> NoiseSpec:
        """The listening condition as a :class:`audiointerp.noise.NoiseSpec`."""
        return NoiseSpec(str(self.condition), self.alpha, self.snr_db, self.noise_offset)

    @property
    def mask_list(self) -> list:
        return list(self.masks) if self.masks else mask_names(self.k, self.tau)

    def method_masks(self, method: str) -> list:
        """The masks scored for ``method``: a learned interpreter's ``native`` mask first, then
        :attr:`mask_list`."""
        return ([NATIVE] if method in LEARNED else []) + self.mask_list

    def interpreter(self, method: str) -> str:
        """The interpreter checkpoint of learned method ``method``."""
        return str(self.interpreters.get(method) or default_interpreter_path(self.checkpoint, method))


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


def completed_samples(csv_dir: Path, masks: list[str], domains=("spectrogram",)) -> set[int]:
    """Repair a method's CSVs after a crash and return the clips complete in every mask's CSV.

    A clip is complete when each mask's CSV holds its row for every one of ``domains``. Torn
    lines and duplicate rows are dropped; rows of incomplete clips are removed from all CSVs,
    so those clips are recomputed once. Files are rewritten atomically only when they change.
    """
    csv_dir.mkdir(parents=True, exist_ok=True)
    domains = tuple(domains)
    per_mask = {m: _read_rows(csv_dir / f"{m}.csv") for m in masks}
    sets = []
    for rows in per_mask.values():
        have: dict[int, set] = {}
        for r in rows:
            have.setdefault(int(r["sample"]), set()).add(r["domain"])
        sets.append({s for s, d in have.items() if set(domains) <= d})
    done = set.intersection(*sets) if sets else set()
    for m, rows in per_mask.items():
        path = csv_dir / f"{m}.csv"
        seen, keep = set(), []
        for r in rows:
            key = (int(r["sample"]), r["domain"])
            if key[0] in done and r["domain"] in domains and key not in seen:
                seen.add(key)
                keep.append(r)
        if not path.is_file() or path.read_text() != _csv_text(keep):  # torn line, duplicate, orphan
            _write_rows(path, keep)
    return done


# ---------------------------------------------------------------------------------------------

def _fmt(v) -> str:
    return f"{float(v):.6g}"


def _provenance_key(cfg: RunConfig, ckpt_sha: str, method: str) -> dict:
    """The part of the configuration that determines a method's per-clip results."""
    noise = cfg.noise.describe()
    key = {"checkpoint_sha256": ckpt_sha, "method": method, "condition": cfg.noise.label, "fold": cfg.fold,
           "noise_sha256": noise and noise["sha256"], "alpha": noise and noise["alpha_used"],
           "noise_offset": noise and noise["offset"], "domains": list(cfg.domains), "inversion": cfg.inversion,
           "masks": cfg.method_masks(method), "k": list(cfg.k), "tau": list(cfg.tau)}
    if method in LEARNED:
        key["interpreter_sha256"] = file_sha256(cfg.interpreter(method))
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


def condition_features(ds: ESC50, fcfg, noise: NoiseSpec, progress: bool = False,
                       batch_size: int = 64) -> torch.Tensor:
    """Features ``[n_clips, 1, n_freq, n_frames]`` (dB) of every clip of ``ds`` under ``noise``.

    Clean features come from the on-disk cache (:func:`audiointerp.data.fold_features`); noisy
    ones are mixed and computed in batches.
    """
    if noise.is_clean:
        return fold_features(ds, fcfg, progress=progress)
    from tqdm.auto import tqdm

    out = []
    for s in tqdm(range(0, len(ds), batch_size), desc=f"{noise.label} features", disable=not progress):
        wav = noise.apply(ds.waveforms(range(s, min(s + batch_size, len(ds)))), fcfg.sample_rate)
        out.append(features(wav, fcfg)[0])
    return torch.cat(out)


def class_probabilities(model, feats: torch.Tensor) -> torch.Tensor:
    """Softmax of the logits (one softmax), float32 ``[n, n_classes]``, of features
    ``[n, 1, F, T]`` in batches of 256 (call under ``torch.no_grad()`` for scoring)."""
    return torch.softmax(predict_logits(model, feats, batch_size=256), dim=1)




def shap_background(root, fcfg, per_class: int = 2, seed: int = 0, progress: bool = False) -> torch.Tensor:
    """SHAP's background: ``per_class`` seeded clips of every class of the training folds 1-3
    (:func:`audiointerp.interpret.stratified_background`), as features ``[n_bg, 1, F, T]`` (dB)
    from the feature cache."""
    tr = ESC50(root, TRAIN_FOLDS, fcfg.sample_rate, fcfg.duration)
    bg_idx = stratified_background(tr.labels, per_class, seed)
    return fold_features(tr, fcfg, progress=progress)[torch.from_numpy(bg_idx)]


@dataclass
class MaskScores:
    """What :func:`score_masks` returns.

    Attributes:
        x_in, x_out: masked features ``[batch, n_masks, 1, F, T]`` (dB).
        audio: re-synthesised x_in then x_out, float32 ``[batch, 2 * n_masks, n_samples]``
            (None without the audio domain).
        scores: ``{domain: {metric: [batch, n_masks]}}``.
        recon_snr_db: ``[batch]`` SNR (dB) of the unmasked clip through the re-synthesis (NaN
            without the audio domain).
        seconds: wall time per domain.
    """

    x_in: torch.Tensor
    x_out: torch.Tensor
    audio: torch.Tensor | None
    scores: dict
    recon_snr_db: torch.Tensor
    seconds: dict


def score_masks(scorer, probs: torch.Tensor, x: torch.Tensor, wav: torch.Tensor | None, m: torch.Tensor, fcfg,
                domains=DOMAINS, inversion: str = "gain", native: torch.Tensor | None = None) -> MaskScores:
    """Mask clips, run the classifier on x_in / x_out and score them in each domain.

    The one scoring path of the runner and of :func:`audiointerp.explore.explain_clip`. All
    masks of all clips go through the model in one batch per domain; ``audio`` re-synthesises
    them with the clips' own STFT phase (:func:`audiointerp.processing.resynthesise`) and
    re-analyses the audio. SPS and COMP depend on the mask only and are computed once.

    Args:
        scorer: the classifier (eval mode; e.g. :func:`audiointerp.models.fuse_for_inference`).
        probs: softmax of the unmasked clips ``[batch, n_classes]``.
        x: features ``[batch, 1, F, T]`` (dB); wav: the clips ``[batch, n_samples]`` (needed for
            the audio domain only).
        m: masks ``[batch, n_masks, 1, F, T]`` in [0, 1].
        domains: ``spectrogram`` and/or ``audio``; inversion: ``gain`` or ``pinv``.
        native: a learned interpreter's own masks over the log1p STFT,
            ``[batch, n_native, 1, n_fft//2+1, n_frames]`` in [0, 1], standing for the first
            ``n_native`` entries of ``m`` (their feature-grid versions, used for SPS and COMP).
            They are applied as PIQ / L2I apply them: x_in has the magnitude
            ``expm1(M ⊙ log1p|STFT|)`` and x_out ``expm1((1 − M) ⊙ log1p|STFT|)``
            (:func:`audiointerp.learned.masked_magnitude`); the audio domain is their ISTFT with the
            clip's phase. Needs ``wav``.

    Raises:
        ConfigError: native masks without the clips' waveforms.
    """
    x_in, x_out = apply_mask(x[:, None], m)
    b, nm = m.shape[:2]
    n_nat = 0 if native is None else native.shape[1]
    if n_nat and wav is None:
        raise ConfigError("native masks need the clips' waveforms (wav)")
    spec = stft(wav, fcfg) if n_nat or "audio" in domains else None  # [b, n_lin, T], once per chunk
    if n_nat:
        L = torch.log1p(spec.abs())
        for j, mm in enumerate((native, 1 - native)):
            mag = masked_magnitude(L[:, None], mm[:, :, 0]).flatten(0, 1)
            (x_in, x_out)[j][:, :n_nat] = magnitude_features(mag, fcfg).reshape(b, n_nat, *x.shape[1:])
    both = torch.cat([x_in, x_out], dim=1)  # [b, 2 * n_masks, 1, F, T]
    flat_m = m.reshape(b * nm, *m.shape[2:])
    mask_scores = {"SPS": sps(flat_m), "COMP": comp(flat_m)}  # the same in both domains
    p_rep = probs.repeat_interleave(nm, dim=0)
    scores, seconds, audio = {}, {}, None
    snr = torch.full((b,), float("nan"))
    with torch.no_grad():
        for dom in domains:
            t0 = time.perf_counter()
            if dom == "spectrogram":
                feats = both.reshape(b * 2 * nm, *x.shape[1:])
            else:
                if n_nat:  # the learned interpreters' own synthesis: ISTFT of expm1(M ⊙ L), clip phase
                    gain = [i for i in range(2 * nm) if i % nm >= n_nat]  # the other masks
                    audio = torch.empty(b, 2 * nm, fcfg.n_samples)
                    audio[:, gain] = resynthesise(both[:, gain], x[:, None], spec[:, None], fcfg.n_samples, fcfg,
                                                  inversion)
                    nat_spec = spec[:, None].expand(b, n_nat, *spec.shape[1:]).flatten(0, 1)
                    for j, mm in enumerate((native, 1 - native)):
                        audio[:, j * nm:j * nm + n_nat] = masked_audio(nat_spec, mm[:, :, 0].flatten(0, 1), fcfg,
                                                                       fcfg.n_samples).reshape(b, n_nat, -1)
                else:
                    audio = resynthesise(both, x[:, None], spec[:, None], fcfg.n_samples, fcfg, inversion)
                feats = features_only(audio.reshape(b * 2 * nm, fcfg.n_samples), fcfg)
                plain = resynthesise(x[:, None], x[:, None], spec[:, None], fcfg.n_samples, fcfg, inversion)[:, 0]
                snr = reconstruction_snr_db(wav, plain).float()
            p = class_probabilities(scorer, feats).reshape(b, 2, nm, -1)
            sc = score(p_rep, p[:, 0].reshape(b * nm, -1), p[:, 1].reshape(b * nm, -1), flat_m, mask_scores)
            scores[dom] = {k: v.reshape(b, nm) for k, v in sc.items()}
            seconds[dom] = time.perf_counter() - t0
    return MaskScores(x_in, x_out, audio, scores, snr, seconds)


def run(cfg: RunConfig, progress: bool = True) -> dict:
    """Explain, mask and score every clip of the fold for every method (see module docstring).

    Returns:
        ``{method: summary}`` with the run folder, clips done and timings per method, plus
        ``_accuracy`` (the model's accuracy under the condition) and ``_total_seconds``.

    Raises:
        ConfigError: unknown method/mask/condition/domain, bad numbers or noise level, missing
            noise file. CheckpointError: bad checkpoint.
        DatasetError / AudioFileError: dataset or noise file problems (the file is named).
        ResultsError: the results folder holds a different run (nothing is overwritten).
    """
    from tqdm.auto import tqdm

    cfg.validate()
    noise = cfg.noise
    t_start = time.perf_counter()
    model, extractor, ckpt = load_classifier(cfg.checkpoint)
    for p in model.parameters():
        p.requires_grad_(False)
    scorer = fuse_for_inference(model)  # BatchNorm folded into the convolutions: scoring passes only
    fcfg = extractor.cfg
    name = model_name(ckpt)
    ckpt_sha = file_sha256(cfg.checkpoint)
    ds = ESC50(cfg.root, (cfg.fold,), fcfg.sample_rate, fcfg.duration)
    t0 = time.perf_counter()
    feats = condition_features(ds, fcfg, noise, progress=progress)
    t_features = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        probs = class_probabilities(scorer, feats)
    t_base = time.perf_counter() - t0
    labels = ds.labels
    preds = probs.argmax(1).numpy()
    accuracy = float((preds == labels).mean())
    n = len(ds) if cfg.limit is None else min(cfg.limit, len(ds))
    summaries = {}
    for method in cfg.methods:
        masks = cfg.method_masks(method)
        learned = method in LEARNED
        out = Path(cfg.results) / name / f"{method}_{noise.label}"
        (out / "attributions").mkdir(parents=True, exist_ok=True)
        key = _provenance_key(cfg, ckpt_sha, method)
        previous = _check_or_start(out / "run.json", key)
        done = completed_samples(out / "csvs", masks, cfg.domains)
        todo = [i for i in range(n) if i not in done]
        kwargs = {}
        if learned:  # loaded even when finished: a checkpoint of another classifier is refused
            kwargs = {"interpreter": cfg.interpreter(method), "classifier_checkpoint": cfg.checkpoint,
                      "features": fcfg}
        if method == "shap" and todo:  # a finished run needs no background
            kwargs = {"background": shap_background(cfg.root, fcfg, cfg.shap_background_per_class, cfg.seed, progress),
                      "nsamples": cfg.shap_nsamples, "seed": cfg.seed}
        explainer = make_method(method, model, **kwargs) if todo or learned else None
        info = {"key": key, "model": name, "method": method, "condition": noise.label, "noise": noise.describe(),
                "config": {**asdict(cfg), "methods": [method]}, "checkpoint": str(cfg.checkpoint),
                "interpreter": cfg.interpreter(method) if learned else None,
                "features": fcfg.to_dict(), "versions": package_versions(), "git_commit": git_commit(),
                "seed": cfg.seed, "accuracy": {noise.label: accuracy}, "n_clips_fold": len(ds),
                "history": previous.get("history", [])}
        _save_json(out / "run.json", {**info, "status": "running"})
        t_attr = t_fwd = t_audio = 0.0
        t_method = time.perf_counter()
        bar = tqdm(total=len(todo), desc=f"{name} {method} {noise.label}", disable=not progress)
        for s in range(0, len(todo), cfg.chunk):
            idx = todo[s:s + cfg.chunk]
            x = feats[idx]
            target = torch.from_numpy(preds[idx])
            t0 = time.perf_counter()
            native = None
            if learned:
                native, attr = explainer.explain(x, target)
            else:
                with torch.enable_grad():
                    attr = explainer.attribute(x, target, seeds=idx)
            t_attr += time.perf_counter() - t0
            for j, i in enumerate(idx):
                path = out / "attributions" / f"{Path(ds.filenames[i]).stem}.npy"
                tmp = path.with_name(path.stem + ".tmp.npy")
                np.save(tmp, attr[j].numpy().astype(np.float16))
                os.replace(tmp, path)
            t0 = time.perf_counter()
            mdict = make_masks(attr, cfg.k, cfg.tau, names=cfg.mask_list)
            if learned:
                mdict[NATIVE] = to_feature_grid(native, fcfg)
            m = torch.stack([mdict[k] for k in masks], dim=1)  # [b, n_masks, 1, F, T]
            need_wav = "audio" in cfg.domains or learned
            wav = noise.apply(ds.waveforms(idx), fcfg.sample_rate) if need_wav else None
            res = score_masks(scorer, probs[idx], x, wav, m, fcfg, cfg.domains, cfg.inversion,
                              native=native[:, None] if learned else None)
            t_fwd += time.perf_counter() - t0 - res.seconds.get("audio", 0.0)
            t_audio += res.seconds.get("audio", 0.0)
            nm = len(masks)
            for j, i in enumerate(idx):
                if i < cfg.audio_examples and res.audio is not None:
                    folder = out / "audio" / Path(ds.filenames[i]).stem
                    write_audio(folder / "clip.wav", wav[j], fcfg.sample_rate)
                    for k_i, mname in enumerate(masks):
                        write_audio(folder / f"{mname}_in.wav", res.audio[j, k_i], fcfg.sample_rate)
                        write_audio(folder / f"{mname}_out.wav", res.audio[j, nm + k_i], fcfg.sample_rate)
            for k_i, mname in enumerate(masks):
                rows = [{"sample": i, "filename": ds.filenames[i], "label": int(labels[i]), "pred": int(preds[i]),
                         "is_correct": int(preds[i] == labels[i]), "domain": dom,
                         "recon_snr_db": _fmt(res.recon_snr_db[j]),
                         **{mt: _fmt(res.scores[dom][mt][j, k_i]) for mt in METRIC_NAMES}}
                        for dom in cfg.domains for j, i in enumerate(idx)]
                _append_rows(out / "csvs" / f"{mname}.csv", rows)
            bar.update(len(idx))
        bar.close()
        elapsed = time.perf_counter() - t_method
        n_done = len(completed_samples(out / "csvs", masks, cfg.domains))
        timing = {"clips_computed": len(todo), "seconds": round(elapsed, 2), "attribution_seconds": round(t_attr, 2),
                  "mask_forward_seconds": round(t_fwd, 2), "audio_domain_seconds": round(t_audio, 2),
                  "clips_per_second": round(len(todo) / elapsed, 3) if todo and elapsed > 0 else None,
                  "features_seconds": round(t_features, 2), "base_forward_seconds": round(t_base, 3),
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        info["history"] = info["history"] + [timing]
        _save_json(out / "run.json", {**info, "status": "complete" if n_done >= n else "partial",
                                      "n_clips_done": n_done, "timings": timing})
        summaries[method] = {"folder": str(out), "n_clips_done": n_done, **timing}
    summaries["_total_seconds"] = round(time.perf_counter() - t_start, 2)
    summaries["_accuracy"] = accuracy
    summaries["_condition"] = noise.label
    return summaries
