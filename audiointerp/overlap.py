"""The overlap test: does the explanation of a class point at the clip of that class in a mix?

Parekh et al., "Listen to Interpret: Post-hoc Interpretability for Audio Networks with NMF"
(L2I, NeurIPS 2022, Sec. 4, "overlap" experiment) mix two clips of different classes and show,
qualitatively, that the interpretation of one class picks out that class's clip. This module
makes that test quantitative, for every attribution method of the project:

1. ``n_pairs`` seeded pairs (A, B) of ESC-50 fold-5 clips of different classes
   (:func:`overlap_pairs`);
2. the mix at equal RMS, ``alpha = 0.5`` of :func:`audiointerp.noise.mix` (A as the clip, B as
   the noise), peak-normalised; the scaled parts of A and B sum to the mix (:func:`mix_pair`);
3. on the classifier's feature grid (mel or linear STFT bins x frames), the dominance of A,
   ``D_A = P_A / (P_A + P_B)`` with each part's power P (:func:`dominance`), and ``D_B = 1 - D_A``;
4. the map of the method for **the class of A** on the mix; its positive part ``a+`` is split
   between the clips, ``match_X = sum(a+ * D_X) / sum(a+)`` (:func:`match_scores`); the pair is a
   success when ``match_A > match_B`` (i.e. ``match_A > 0.5``). A map without positive values
   has no match (NaN) and counts as a failure.

Two baselines run alongside: ``energy`` (the map is the mix's own power on the feature grid: it
only tells which clip is louder where) and ``random`` (a seeded uniform map: the share of the
grid each clip dominates). PIQ and L2I give two rows each: their real-valued map (``piq``,
``l2i``) and their own mask carried to the feature grid (``piq (native)``, ``l2i (native)``).
:func:`summary_table` gives, per model and method, the fraction of
successes with a bootstrap 95% CI, and :func:`write_overlap` writes the tables to
``supplementary/overlap/``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .data import ESC50
from .errors import AudioInterpError, ConfigError, ResultsError
from .interpret import METHODS, make_method
from .models import load_classifier, model_name
from .noise import mix
from .processing import AMIN, FeatureConfig, features, linear_to_feature_grid, stft, to_feature_power
from .render import CI_HI, CI_LO, to_markdown
from .scoring import explain
from .stats import bootstrap_ci

ALPHA = 0.5  # equal RMS: A and B are equally loud
FOLD = 5
BASELINES = ("energy", "random")
PAIR_COLUMNS = ["model", "method", "pair", "file_a", "file_b", "label_a", "label_b", "pred_mix", "pred_is_a",
                "pred_is_b", "share_a", "match_a", "match_b", "success", "above_uniform"]
SUMMARY_COLUMNS = ["n", "success", "success" + CI_LO, "success" + CI_HI, "above uniform", "above uniform" + CI_LO,
                   "above uniform" + CI_HI, "empty maps", "success (pred A)", "pred A", "pred B", "pred other"]
PROTOCOL = (
    "**Overlap test** (after the overlap experiment of Parekh et al., L2I, NeurIPS 2022). Two ESC-50 fold-5 "
    "clips A and B of different classes (seeded pairs, no pair twice) are mixed at equal RMS (alpha = 0.5, "
    "peak-normalised). Each method explains the class of A on the mix. On the classifier's feature grid, "
    "D_A = P_A / (P_A + P_B) is the share of the power of each bin that comes from A; the positive part a+ of "
    "the map gives match_A = sum(a+ D_A) / sum(a+) and match_B = 1 - match_A, and a pair is a success when "
    "match_A > match_B. `success`: fraction of successful pairs [95% percentile-bootstrap CI over pairs]; "
    "`empty maps`: maps with no positive value (counted as failures); `success (pred A)`: the fraction among "
    "pairs whose mix the classifier assigns to A's class; `pred A / B / other`: what the classifier predicts "
    "on the mix. Baselines: `energy` (the mix's power as the map: which clip is louder) and `random` "
    "(a seeded uniform map: which clip dominates more of the grid). For PIQ and L2I, `piq`/`l2i` use their "
    "real-valued map (PIQ: mask logits, L2I: relevance-weighted NMF ratio) and `piq (native)`/`l2i (native)` "
    "their own mask in [0, 1], carried to the feature grid. Because A often dominates more of the grid "
    "than B, `success` has a high floor; `above uniform` is the paired comparison: the fraction of pairs where "
    "match_A exceeds share_A, the mean of D_A over the grid (what a constant map gets), i.e. where the map "
    "points at A more than spreading evenly would."
)


def overlap_pairs(labels: np.ndarray, n_pairs: int = 100, seed: int = 0) -> np.ndarray:
    """Seeded pairs of clips of different classes for the overlap test.

    Draws ``n_pairs`` distinct unordered pairs uniformly (without replacement) from all pairs of
    clips with different labels, then orders each pair at random: the first index is clip A
    (explained), the second clip B. No two rows hold the same two clips, in either order.

    Args:
        labels: int ``[n_clips]`` class of each clip.
        n_pairs: number of pairs (>= 1).
        seed: seed of ``numpy.random.default_rng``; the same (labels, n_pairs, seed) give the same pairs.

    Returns:
        int64 ``[n_pairs, 2]`` indices into ``labels``, rows ``(i, j)`` with ``labels[i] != labels[j]``.

    Raises:
        ConfigError: ``n_pairs < 1``, or more pairs asked for than exist (both numbers quoted).
    """
    labels = np.asarray(labels).reshape(-1)
    i, j = np.triu_indices(len(labels), k=1)
    keep = labels[i] != labels[j]
    i, j = i[keep], j[keep]
    if not 1 <= int(n_pairs) <= len(i):
        raise ConfigError(f"n_pairs must be between 1 and {len(i)} (the pairs of clips of different classes among "
                          f"{len(labels)} clips), got {n_pairs!r}")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(i), size=int(n_pairs), replace=False)
    pairs = np.stack([i[pick], j[pick]], axis=1).astype(np.int64)
    swap = rng.random(len(pairs)) < 0.5
    pairs[swap] = pairs[swap, ::-1]
    return pairs


def mix_pair(wav_a: torch.Tensor, wav_b: torch.Tensor, cfg: FeatureConfig):
    """Mix clip A with clip B at equal RMS (:func:`audiointerp.noise.mix`, ``alpha = 0.5``).

    Args:
        wav_a, wav_b: float32 ``[b, n_samples]`` waveforms at ``cfg.sample_rate`` Hz,
            ``n_samples = cfg.n_samples``.
        cfg: the classifier's feature configuration.

    Returns:
        ``(mix, part_a, part_b)``, float32 ``[b, n_samples]``: the peak-normalised mix and the
        contributions of A and B after the same scaling (``part_a + part_b == mix`` up to float error).

    Raises:
        ConfigError: shapes other than ``[b, cfg.n_samples]`` (quoted); a silent clip B.
    """
    for name, w in (("wav_a", wav_a), ("wav_b", wav_b)):
        if w.dim() != 2 or w.shape[-1] != cfg.n_samples:
            raise ConfigError(f"{name} must be [batch, {cfg.n_samples}] ({cfg.duration} s at {cfg.sample_rate} Hz), "
                              f"got shape {tuple(w.shape)}")
    return mix(wav_a, wav_b, alpha=ALPHA, return_parts=True)


def feature_power(wav: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Linear power on the classifier's feature grid: |STFT|^2 (``stft``) or that power through the
    mel filterbank (``mel``), as :func:`audiointerp.processing.log_mel` computes it before the dB.

    Args:
        wav: float32 ``[b, n_samples]``.

    Returns:
        float32 ``[b, 1, n_freq, n_frames]`` (power, not dB; no floor).
    """
    return to_feature_power(stft(wav, cfg).abs() ** 2, cfg)[:, None]


def dominance(part_a: torch.Tensor, part_b: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Share of each feature bin's power that comes from clip A.

    ``D_A = (P_A + eps) / (P_A + P_B + 2 eps)`` with P the power on the feature grid
    (:func:`feature_power`) and ``eps = 1e-10``, the features' power floor (-100 dB): bins where both
    parts are below the floor count as shared (0.5), not as B's, so ``D_B = 1 - D_A`` exactly.

    Args:
        part_a, part_b: float32 ``[b, n_samples]`` the parts of the mix (:func:`mix_pair`).
        cfg: the classifier's feature configuration.

    Returns:
        float32 ``[b, 1, n_freq, n_frames]`` in [0, 1].
    """
    p_a, p_b = feature_power(part_a, cfg), feature_power(part_b, cfg)
    return (p_a + AMIN) / (p_a + p_b + 2 * AMIN)


def match_scores(attr: torch.Tensor, d_a: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """How much of a map's positive mass lies on clip A and on clip B.

    ``match_X = sum(a+ * D_X) / sum(a+)`` over the grid, ``a+ = max(attr, 0)``, ``D_B = 1 - D_A``.

    Args:
        attr: ``[b, 1, n_freq, n_frames]`` attribution maps (any real units).
        d_a: ``[b, 1, n_freq, n_frames]`` dominance of A (:func:`dominance`).

    Returns:
        ``(match_a, match_b)``, float64 ``[b]`` in [0, 1] summing to 1; NaN for a map with no
        positive value.

    Raises:
        ConfigError: the shapes differ (quoted).
    """
    if attr.shape != d_a.shape:
        raise ConfigError(f"attribution {tuple(attr.shape)} and dominance {tuple(d_a.shape)} differ in shape")
    pos = attr.detach().double().clamp_min(0).flatten(1)
    d = d_a.detach().double().flatten(1)
    total = pos.sum(1)
    safe = total.where(total > 0, torch.full_like(total, float("nan")))
    return ((pos * d).sum(1) / safe).cpu().numpy(), ((pos * (1 - d)).sum(1) / safe).cpu().numpy()


def _explainers(methods, model, cfg, checkpoint, root, seed, skip_unavailable, options=None):
    """``({method: explainer or None (a baseline)}, {method: message of a skipped one})``; ``options``
    are further :class:`audiointerp.interpret.MethodOptions` fields (e.g. ``lime_nsamples``)."""
    out, skipped = {}, {}
    for m in dict.fromkeys([*methods, *BASELINES]):
        if m in BASELINES:
            out[m] = None
            continue
        try:
            out[m] = make_method(m, model, features=cfg, root=root, seed=seed, checkpoint=checkpoint, **(options or {}))
        except AudioInterpError as e:
            if not skip_unavailable:
                raise
            skipped[m] = str(e)
    return out, skipped


def overlap_test(checkpoint, methods, n_pairs: int = 100, seed: int = 0, root=None, batch: int = 8,
                 progress: bool = True, skip_unavailable: bool = False, device=None,
                 method_options: dict | None = None) -> pd.DataFrame:
    """Run the overlap test (module docstring) of one classifier on fold-5 pairs.

    Every method explains the class of clip A on the mix; the baselines ``energy`` and ``random``
    are always added. Pairs are processed ``batch`` at a time (one mix, one feature pass, one
    classifier pass and one call of each method per batch); SHAP draws are seeded by pair index.

    Args:
        checkpoint: classifier checkpoint path (:func:`audiointerp.models.load_classifier`).
        methods: method names for :func:`audiointerp.interpret.make_method` (``saliency``,
            ``gradcam``, ``shap``, and the learned interpreters where available).
        n_pairs, seed: the pairs (:func:`overlap_pairs`); ``seed`` also seeds SHAP and ``random``.
        root: ESC-50 root (default ``ESC50_ROOT``).
        batch: pairs per batch (>= 1).
        progress: show a tqdm bar over batches.
        skip_unavailable: leave out a method whose explainer cannot be built (e.g. a missing
            interpreter file) instead of raising; its message goes to ``df.attrs["skipped"]``.
        device: where the classifier and the methods run (:func:`audiointerp.devices.resolve_device`;
            None: the CPU).
        method_options: further options of every method (:class:`audiointerp.interpret.MethodOptions`,
            e.g. ``{"lime_nsamples": 300}``).

    Returns:
        DataFrame, one row per (method, pair), columns :data:`PAIR_COLUMNS`: ``pair`` the row of
        the pair, ``file_a``/``file_b`` the ESC-50 file names, ``label_a``/``label_b`` their class
        indices, ``pred_mix`` the classifier's top-1 class on the mix, ``pred_is_a``/``pred_is_b``
        bools, ``match_a``/``match_b`` floats in [0, 1] (NaN: empty map), ``success`` bool.
        ``df.attrs``: ``skipped`` ({method: message}) and ``seconds`` ({method: attribution time}).

    Raises:
        CheckpointError, DatasetError: bad checkpoint or root. ConfigError: bad ``n_pairs`` or
        ``batch``; an unknown or unavailable method unless ``skip_unavailable``.
    """
    from tqdm.auto import tqdm

    if int(batch) < 1:
        raise ConfigError(f"batch must be >= 1, got {batch!r}")
    model, extractor, ckpt = load_classifier(checkpoint, device=device)
    dev = next(iter(model.parameters())).device
    cfg, name = extractor.cfg, model_name(ckpt)
    ds = ESC50(root, (FOLD,), cfg.sample_rate, cfg.duration)
    pairs = overlap_pairs(ds.labels, n_pairs, seed)
    explainers, skipped = _explainers(methods, model, cfg, checkpoint, root, seed, skip_unavailable, method_options)
    seconds = dict.fromkeys(explainers, 0.0)
    files, labels = np.asarray(ds.filenames), ds.labels
    rows = []
    for s in tqdm(range(0, len(pairs), int(batch)), desc=f"overlap {name}", disable=not progress):
        idx = np.arange(s, min(s + int(batch), len(pairs)))
        a, b = pairs[idx, 0], pairs[idx, 1]
        mixed, part_a, part_b = (w.to(dev) for w in mix_pair(ds.waveforms(a), ds.waveforms(b), cfg))
        x = features(mixed, cfg)[0]
        with torch.no_grad():
            pred = model(x).argmax(1).cpu().numpy()
        d_a = dominance(part_a, part_b, cfg)
        target = torch.from_numpy(labels[a])
        common = {"model": name, "pair": idx, "file_a": files[a], "file_b": files[b], "label_a": labels[a],
                  "label_b": labels[b], "pred_mix": pred, "pred_is_a": pred == labels[a],
                  "pred_is_b": pred == labels[b], "share_a": d_a.double().flatten(1).mean(1).cpu().numpy()}
        for method, explainer in explainers.items():
            t = time.perf_counter()
            maps = {}
            if method == "energy":
                maps[method] = feature_power(mixed, cfg)
            elif method == "random":
                maps[method] = torch.from_numpy(np.stack([np.random.default_rng([seed, int(p)]).random(d_a.shape[1:])
                                                          for p in idx])).to(dev)
            else:  # the map, and a method's own mask (PIQ, L2I) carried to the feature grid
                expl = explain(explainer, x, target, seeds=idx.tolist())
                maps[method] = expl.attribution
                if expl.native is not None:
                    maps[f"{method} (native)"] = linear_to_feature_grid(expl.native, cfg)
            seconds[method] += time.perf_counter() - t
            for label, attr in maps.items():
                m_a, m_b = match_scores(attr, d_a)
                rows.append(pd.DataFrame({**common, "method": label, "match_a": m_a, "match_b": m_b,
                                          "success": m_a > m_b, "above_uniform": m_a > common["share_a"]}))
    df = pd.concat(rows, ignore_index=True)[PAIR_COLUMNS]
    df = df.sort_values(["method", "pair"], key=_method_key, kind="stable", ignore_index=True)
    df.attrs = {"skipped": skipped, "seconds": seconds}
    return df


def _method_key(col: pd.Series) -> pd.Series:
    """Sort key: methods in :data:`audiointerp.interpret.METHODS` order, then others by name, baselines last."""
    if col.name != "method":
        return col
    known = [m for base in METHODS for m in (base, f"{base} (native)")]
    order = [*known, *sorted(set(col) - set(known) - set(BASELINES)), *BASELINES]
    return col.map({m: i for i, m in enumerate(order)})


def summary_table(df: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Per (model, method): how often the map of A's class matches A better than B.

    Args:
        df: rows of :func:`overlap_test` (one or several models).
        n_resamples, seed, confidence: the percentile bootstrap of the success fraction over pairs
            (:func:`audiointerp.tables.bootstrap_ci`).

    Returns:
        DataFrame indexed by (model, method), columns :data:`SUMMARY_COLUMNS`: ``n`` pairs;
        ``success`` the fraction of successes with ``success lo``/``success hi`` its CI; ``above
        uniform`` (with CI) the fraction of pairs where ``match_a`` exceeds ``share_a``, the mean
        dominance of A over the grid that a constant map would get (a paired baseline); ``empty
        maps`` the number of maps without positive values (NaN match, failures); ``success (pred
        A)`` the success fraction among pairs the classifier assigns to A's class (NaN if none);
        ``pred A``, ``pred B``, ``pred other`` the fractions of pairs predicted as A's class, B's, or
        neither. Fractions in [0, 1].

    Raises:
        ConfigError: bad ``n_resamples`` or ``confidence``.
    """
    out = {}
    for key, g in df.sort_values(["model", "method"], key=_method_key, kind="stable").groupby(
            ["model", "method"], sort=False):
        success = g["success"].to_numpy(dtype=float)
        mean, lo, hi = bootstrap_ci(success, n_resamples=n_resamples, seed=seed, confidence=confidence)
        above = bootstrap_ci(g["above_uniform"].to_numpy(dtype=float), n_resamples=n_resamples, seed=seed,
                             confidence=confidence)
        on_a = g.loc[g["pred_is_a"], "success"]
        out[key] = [len(g), mean, lo, hi, *above, int(g["match_a"].isna().sum()), on_a.mean() if len(on_a) else np.nan,
                    g["pred_is_a"].mean(), g["pred_is_b"].mean(), (~(g["pred_is_a"] | g["pred_is_b"])).mean()]
    table = pd.DataFrame.from_dict(out, orient="index", columns=SUMMARY_COLUMNS)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["model", "method"])
    return table


def paired_table(df: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Per model: every method against the one with the highest ``above uniform`` rate, pair by pair.

    For the leading method L (highest fraction of pairs above uniform, baselines excluded) and each
    other method M of the same model, over the pairs both ran (same ``pair``, ``file_a``, ``file_b``):
    the mean of the per-pair differences M − L of ``success`` and of ``above_uniform`` (each 0/1), with
    a percentile-bootstrap CI that resamples pairs (:func:`audiointerp.stats.bootstrap_ci`). A CI below
    0 says L points at A more often than M on the same mixes; one that holds 0 says the data cannot
    separate them.

    Args:
        df: rows of :func:`overlap_test` (one or several models).
        n_resamples, seed, confidence: the bootstrap over pairs.

    Returns:
        DataFrame indexed by (model, method) with columns ``versus`` (L), ``n`` (common pairs),
        ``Δ success``, ``Δ success lo``/``hi``, ``Δ above uniform``, ``Δ above uniform lo``/``hi``
        (differences of fractions, in [−1, 1]); the rows of L itself are left out.

    Raises:
        ConfigError: bad ``n_resamples`` or ``confidence``.
    """
    key = ["pair", "file_a", "file_b"]
    cols = ["versus", "n", "Δ success", "Δ success" + CI_LO, "Δ success" + CI_HI, "Δ above uniform",
            "Δ above uniform" + CI_LO, "Δ above uniform" + CI_HI]
    rows = {}
    for model, g in df.sort_values(["model", "method"], key=_method_key, kind="stable").groupby("model", sort=False):
        rates = g[~g["method"].isin(BASELINES)].groupby("method", sort=False)["above_uniform"].mean()
        if rates.empty:
            continue
        lead = rates.idxmax()
        ref = g[g["method"] == lead].set_index(key)[["success", "above_uniform"]].astype(float)
        for method, m in g.groupby("method", sort=False):
            if method == lead:
                continue
            m = m.set_index(key)[["success", "above_uniform"]].astype(float)
            common = m.index.intersection(ref.index, sort=False)
            mean, lo, hi = bootstrap_ci((m.loc[common] - ref.loc[common]).to_numpy(), n_resamples=n_resamples,
                                        seed=seed, confidence=confidence)  # both columns, one set of draws
            rows[(model, method)] = [lead, len(common), *np.stack([mean, lo, hi], 1).ravel()]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=cols)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["model", "method"]) if rows else \
        pd.MultiIndex.from_tuples([], names=["model", "method"])
    return table


def write_overlap(df: pd.DataFrame, out_dir, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Write the per-pair rows of each model in ``df`` and the summary of every model in ``out_dir``.

    ``overlap_pairs_<model>.csv`` holds one model's rows (:data:`PAIR_COLUMNS`). Rows of the methods
    in ``df`` replace that model's earlier rows of those methods; its other methods are kept when
    they were run on the same pairs (same ``pair``, ``file_a``, ``file_b``), else dropped. Other
    models' files are untouched. ``overlap.csv`` and ``overlap.md`` summarise every
    ``overlap_pairs_*.csv`` in ``out_dir`` (:func:`summary_table`); the Markdown opens with the
    protocol and shows ``success [lo, hi]``, then the paired comparison with each model's leading
    method (:func:`paired_table`, also in ``overlap_paired.csv``).

    Args:
        df: rows of :func:`overlap_test`.
        out_dir: output folder (created).
        n_resamples, seed: the bootstrap of :func:`summary_table`.

    Returns:
        ``{"pairs": [paths], "csv": path, "md": path, "paired": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in df.groupby("model", sort=False):
        path = out / f"overlap_pairs_{name}.csv"
        if path.is_file():
            old = pd.read_csv(path)
            key = ["pair", "file_a", "file_b"]
            same_pairs = old[key].drop_duplicates().sort_values(key).reset_index(drop=True).equals(
                rows[key].drop_duplicates().sort_values(key).reset_index(drop=True))
            if same_pairs:
                rows = pd.concat([old[~old["method"].isin(rows["method"])], rows], ignore_index=True)
                rows = rows.sort_values(["method", "pair"], key=_method_key, kind="stable")
        rows[PAIR_COLUMNS].to_csv(path, index=False)
        written.append(path)
    return {"pairs": written, **write_overlap_summaries(out, n_resamples=n_resamples, seed=seed)}


def write_overlap_summaries(out_dir, n_resamples: int = 1000, seed: int = 0) -> dict:
    """(Re)write ``overlap.csv``, ``overlap_paired.csv`` and ``overlap.md`` from every
    ``overlap_pairs_*.csv`` in ``out_dir`` (no model is run: the summaries of :func:`write_overlap`).

    Returns:
        ``{"csv": path, "md": path, "paired": path}``.

    Raises:
        ResultsError: ``out_dir`` holds no ``overlap_pairs_*.csv`` (names the folder).
    """
    out = Path(out_dir)
    files = sorted(out.glob("overlap_pairs_*.csv"))
    if not files:
        raise ResultsError(f"no overlap_pairs_*.csv in {out}: run scripts/overlap.py first")
    everything = pd.concat([pd.read_csv(p) for p in files], ignore_index=True)
    table = summary_table(everything, n_resamples=n_resamples, seed=seed)
    table.to_csv(out / "overlap.csv")
    paired = paired_table(everything, n_resamples=n_resamples, seed=seed)
    paired.to_csv(out / "overlap_paired.csv")
    title = "Overlap test: fraction of pairs where the map of A's class matches A better than B"
    note = ("Paired over the same mixes: each method minus the model's leading method (`versus`, the highest "
            "`above uniform`), per-pair differences of the 0/1 outcomes, mean [95% bootstrap CI over pairs]. "
            "A CI below 0: the leading method points at A more often on the same mixes.")
    (out / "overlap.md").write_text(f"{PROTOCOL}\n\n{to_markdown(table.round(3), title)}\n\n{note}\n\n"
                                    f"{to_markdown(paired.round(3), 'Overlap test, paired with the leading method')}\n")
    return {"csv": out / "overlap.csv", "md": out / "overlap.md", "paired": out / "overlap_paired.csv"}
