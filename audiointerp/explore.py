"""Explore one clip: explain, mask, listen and score, with the runner's own functions.

The illustration notebook (``notebooks/illustration.ipynb``) and its widgets call
:func:`explain_clip`, which chains for ONE clip exactly what :func:`audiointerp.runner.run` does
for a fold: mix the listening condition into the waveform (:class:`audiointerp.noise.NoiseSpec`),
compute features (:func:`audiointerp.processing.features`), explain the predicted class
(:func:`audiointerp.interpret.make_method`), build one mask (:func:`audiointerp.masks.make_masks`),
split the features into the kept part x_in and its complement x_out
(:func:`audiointerp.masks.apply_mask`), score both in the spectrogram domain, then re-synthesise
x_in / x_out to audio with the clip's own STFT phase (:func:`audiointerp.processing.resynthesise`)
and score the re-analysed audio (:func:`audiointerp.metrics.score`).

Mask-and-reconstruct listenable interpretations follow Parekh et al., "Listen to Interpret:
Post-hoc Interpretability for Audio Networks with NMF" (L2I, NeurIPS 2022) and Paissan et al.,
"Posthoc Interpretation via Quantization" (PIQ, 2023): the part of the input that the
explanation selects is played back, as is what it leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio_io import load_clip, write_audio
from .data import esc50_root, read_meta, resolve_audio
from .errors import ConfigError, unknown_name
from .interpret import make_method
from .masks import NATIVE, resolve_mask_name
from .noise import CONDITIONS, NoiseSpec, noise_path
from .processing import INVERSIONS, FeatureConfig, features, mel_filterbank
from .scoring import DOMAINS, class_probabilities, explain, mask_stack, score_masks

DEFAULT_CLIP = "5-177614-A-5.wav"  # ESC-50 fold 5, class 5 (cat)


def load_example(filename: str = DEFAULT_CLIP, root=None, sample_rate: int = 16000,
                 duration: float = 5.0) -> tuple[torch.Tensor, int | None]:
    """One ESC-50 clip by its official name (``.wav`` or the ``.flac`` copy), as the runner loads it.

    Returns:
        ``(waveform, target)``: float32 ``[round(duration * sample_rate)]`` mono, peak-normalised, at
        ``sample_rate`` Hz; the class index from ``meta/esc50.csv`` (None if the csv lacks the clip).

    Raises:
        DatasetError: ESC-50 root unset/wrong, or the clip missing (named). AudioFileError: corrupt clip.
    """
    root = esc50_root(root)
    path = resolve_audio(root, filename)
    meta = read_meta(root)
    rows = meta[meta["filename"].map(lambda f: Path(f).stem) == Path(filename).stem]
    target = int(rows["target"].iloc[0]) if len(rows) else None
    return load_clip(path, sample_rate, duration), target


def fold_index(filename: str, root=None) -> int | None:
    """Index of a clip within its fold, as the runner numbers clips (the ``sample`` column of its
    CSVs, and the per-clip SHAP seed): pass it as ``clip_index`` to :func:`explain_clip` to get the
    runner's map. None when ``meta/esc50.csv`` lacks the clip.

    Raises:
        DatasetError: ESC-50 root unset or wrong.
    """
    meta = read_meta(root)
    stems = meta["filename"].map(lambda f: Path(f).stem)
    hit = meta.loc[stems == Path(filename).stem, "fold"]
    return stems[meta["fold"] == hit.iloc[0]].tolist().index(Path(filename).stem) if len(hit) else None


def available_conditions() -> list[str]:
    """The conditions of :data:`audiointerp.noise.CONDITIONS` whose noise file can be found here."""
    out = []
    for c in CONDITIONS:
        try:
            noise_path(c)
            out.append(c)
        except ConfigError:
            pass
    return out


@dataclass
class ClipExplanation:
    """One clip explained, masked, re-synthesised and scored (:func:`explain_clip`).

    Attributes:
        waveform: float32 ``[n_samples]`` the clip as the model hears it (noise mixed in).
        sample_rate: the model rate in Hz (every waveform here is at this rate).
        features: float32 ``[1, F, T]`` log-mel / log-STFT in dB (floor -100 dB).
        probs: float32 ``[n_classes]`` softmax of the logits on ``features``.
        pred, target: predicted class and the explained class (the prediction unless given).
        attribution: float32 ``[1, F, T]`` signed map of ``method``.
        mask: float32 ``[1, F, T]`` in [0, 1]; x_in, x_out: ``[1, F, T]`` dB, the kept part and
            the complement (:func:`audiointerp.masks.apply_mask`).
        audio_in, audio_out: float32 ``[n_samples]``, x_in / x_out re-synthesised with the clip's
            STFT phase (not normalised: a masked clip is as quiet as what it keeps).
        scores: ``{domain: {metric: float}}`` for domains ``spectrogram`` and ``audio``, metrics of
            :data:`audiointerp.metrics.METRIC_NAMES`.
        recon_snr_db: SNR (dB) of the unmasked clip after the same re-synthesis.
        cfg: the feature configuration; method, mask_name, condition (noise label), inversion.
    """

    waveform: torch.Tensor
    sample_rate: int
    features: torch.Tensor
    probs: torch.Tensor
    pred: int
    target: int
    attribution: torch.Tensor
    mask: torch.Tensor
    x_in: torch.Tensor
    x_out: torch.Tensor
    audio_in: torch.Tensor
    audio_out: torch.Tensor
    scores: dict = field(default_factory=dict)
    recon_snr_db: float = float("nan")
    cfg: FeatureConfig | None = None
    method: str = ""
    mask_name: str = ""
    condition: str = "clean"
    inversion: str = "gain"

    @property
    def label(self) -> str:
        """``<method>_<mask>_<condition>``, e.g. ``saliency_topK_30_clean`` (file-name friendly)."""
        return f"{self.method}_{self.mask_name}_{self.condition}"


def explain_clip(model, extractor, waveform: torch.Tensor, method: str, mask: str = "topK_30",
                 k: float | None = None, tau: float | None = None, noise: NoiseSpec = NoiseSpec(),
                 inversion: str = "gain", explainer=None, target: int | None = None, seed: int = 0,
                 clip_index: int = 0, root=None, shap_nsamples: int = 32, checkpoint=None) -> ClipExplanation:
    """Explain one clip, mask it, re-synthesise x_in / x_out and score both domains (module docstring).

    Args:
        model, extractor: from :func:`audiointerp.models.load_classifier`.
        waveform: float32 ``[n_samples]`` (or ``[1, n_samples]``) clean clip at the model rate,
            ``n_samples = extractor.cfg.n_samples`` (e.g. from :func:`load_example`).
        method: a method of :data:`audiointerp.interpret.METHODS`.
        mask, k, tau: a mask name or family (:func:`audiointerp.masks.resolve_mask_name`; k, tau
            fractions in (0, 1]); ``"native"`` for a method's own mask (PIQ, L2I; applied with its
            own synthesis, as the runner does).
        noise: the listening condition mixed in before anything else (default clean).
        inversion: ``gain`` or ``pinv`` (:func:`audiointerp.processing.resynthesise`).
        explainer: a prebuilt method (:func:`audiointerp.interpret.make_method`; it must be
            ``method``), else one is built here (SHAP: background from ``root``, ``shap_nsamples``
            draws, ``seed``; PIQ / L2I / L-MAC: the interpreter next to ``checkpoint``).
        target: class to explain (default: the predicted class, as the runner does).
        clip_index: the per-clip seed of stochastic methods (the runner uses the clip's index in
            its fold, :func:`fold_index`).
        checkpoint: the classifier's file (PIQ / L2I / L-MAC find their interpreter next to it).

    Returns:
        a :class:`ClipExplanation`.

    Raises:
        ConfigError: unknown method/mask/condition/inversion, bad k/tau/SNR, a waveform of the wrong
            shape or length, an explainer of another method, a target outside the classes, the
            ``native`` mask of a method without one.
    """
    cfg = extractor.cfg
    name = NATIVE if mask == NATIVE else resolve_mask_name(mask, k, tau)
    noise.validate()
    if inversion not in INVERSIONS:
        raise unknown_name("inversion", inversion, INVERSIONS)
    wav = torch.as_tensor(waveform, dtype=torch.float32)
    if wav.dim() == 2 and wav.shape[0] == 1:
        wav = wav[0]
    if wav.dim() != 1 or wav.shape[0] != cfg.n_samples:
        raise ConfigError(f"waveform must be [{cfg.n_samples}] samples ({cfg.duration} s at {cfg.sample_rate} Hz), "
                          f"got shape {tuple(wav.shape)}")
    if explainer is None:
        explainer = make_method(method, model, features=cfg, root=root, shap_nsamples=shap_nsamples, seed=seed,
                                checkpoint=checkpoint)
    elif getattr(explainer, "name", method) != method:
        raise ConfigError(f"explainer is {explainer.name!r} but method {method!r} was asked for")
    device = next(iter(model.parameters()), wav).device  # the model's device (load_classifier(device=...))
    wav = noise.apply(wav[None], cfg.sample_rate).to(device)  # [1, n]
    x = features(wav, cfg)[0]  # [1, 1, F, T]
    probs = class_probabilities(model, x)  # [1, n_classes]
    pred = int(probs.argmax(1))
    tgt = pred if target is None else int(target)
    if not 0 <= tgt < probs.shape[1]:
        raise ConfigError(f"target {target!r} is not a class index 0-{probs.shape[1] - 1}")
    expl = explain(explainer, x, torch.tensor([tgt]), seeds=[clip_index], native=name == NATIVE)
    m = mask_stack(expl, [name], cfg)  # [1, 1, 1, F, T]
    res = score_masks(model, probs, x, wav, m, cfg, DOMAINS, inversion,  # the runner's scoring path
                      native=expl.native[:, None] if name == NATIVE else None)
    scores = {dom: {mt: float(v[0, 0]) for mt, v in sc.items()} for dom, sc in res.scores.items()}
    x_in, x_out, audio = res.x_in[:, 0].cpu(), res.x_out[:, 0].cpu(), res.audio[0].cpu()
    return ClipExplanation(  # on the CPU, for plots and players
        waveform=wav[0].cpu(), sample_rate=cfg.sample_rate, features=x[0].cpu(), probs=probs[0].cpu(), pred=pred,
        target=tgt, attribution=expl.attribution[0].cpu(), mask=m[0, 0].cpu(), x_in=x_in[0], x_out=x_out[0],
        audio_in=audio[0], audio_out=audio[1], scores=scores, recon_snr_db=float(res.recon_snr_db[0]), cfg=cfg,
        method=method, mask_name=name, condition=noise.label, inversion=inversion)


def scores_table(expls):
    """pandas DataFrame of the scores: one row per (explanation, domain), columns the seven metrics.

    ``expls``: a list of :class:`ClipExplanation` (rows indexed by method, mask, condition, domain).
    """
    import pandas as pd

    rows = [{"method": e.method, "mask": e.mask_name, "condition": e.condition, "domain": d, **s,
             "recon_snr_db": e.recon_snr_db} for e in expls for d, s in e.scores.items()]
    return pd.DataFrame(rows).set_index(["method", "mask", "condition", "domain"])


def _freq_axis(ax, cfg: FeatureConfig, n_freq: int) -> None:
    """Label rows in Hz: STFT bins are linear; mel rows get their band's centre frequency."""
    if cfg.kind == "mel":
        fb = mel_filterbank(cfg)  # [n_lin, n_mels]
        centres = fb.argmax(0).numpy() * cfg.sample_rate / cfg.n_fft
    else:
        centres = np.arange(n_freq) * cfg.sample_rate / cfg.n_fft
    rows = np.linspace(0, n_freq - 1, 6).round().astype(int)
    ax.set_yticks(rows + 0.5)
    ax.set_yticklabels([f"{centres[r]:.0f}" for r in rows])
    ax.set_ylabel(f"frequency (Hz{', mel rows' if cfg.kind == 'mel' else ''})")


def plot_explanation(expl: ClipExplanation, class_names=None):
    """Matplotlib figure of one explanation: waveform; spectrogram (dB); attribution over the grey
    spectrogram (red positive, blue negative, colour range the 99th percentile of |A|); mask; x_in;
    x_out (dB). Time in seconds on x, frequency in Hz on y (mel rows labelled with their centre
    frequency), colourbars in dB.
    Returns the Figure (the caller shows, saves or closes it)."""
    import matplotlib.pyplot as plt

    cfg = expl.cfg
    n_freq, n_frames = expl.features.shape[-2:]
    dur = expl.waveform.shape[-1] / expl.sample_rate
    extent = (0, dur, 0, n_freq)
    name = (lambda c: class_names[c] if class_names is not None else str(c))
    fig, axes = plt.subplots(3, 2, figsize=(12, 9), constrained_layout=True)
    ax = axes[0, 0]
    t = np.arange(expl.waveform.shape[-1]) / expl.sample_rate
    ax.plot(t, expl.waveform.numpy(), lw=0.5, color="0.3", label="clip")
    ax.plot(t, expl.audio_in.numpy(), lw=0.5, color="C3", alpha=0.8, label="x_in (audio)")
    ax.set(xlim=(0, dur), xlabel="time (s)", ylabel="amplitude", title="waveform")
    ax.legend(loc="upper right", fontsize=8)
    x = expl.features[0].numpy()
    vmin, vmax = max(-100.0, float(x.max()) - 80), float(x.max())
    panels = [(axes[0, 1], x, "spectrogram (dB)", "magma", (vmin, vmax), "dB"),
              (axes[1, 1], expl.mask[0].numpy(), f"mask {expl.mask_name}", "viridis", (0, 1), ""),
              (axes[2, 0], expl.x_in[0].numpy(), "x_in: kept (dB)", "magma", (vmin, vmax), "dB"),
              (axes[2, 1], expl.x_out[0].numpy(), "x_out: complement (dB)", "magma", (vmin, vmax), "dB")]
    for ax, img, title, cmap, (lo, hi), unit in panels:
        im = ax.imshow(img, origin="lower", aspect="auto", extent=extent, cmap=cmap, vmin=lo, vmax=hi,
                       interpolation="nearest")
        fig.colorbar(im, ax=ax, label=unit)
        ax.set(title=title, xlabel="time (s)")
        _freq_axis(ax, cfg, n_freq)
    ax = axes[1, 0]
    a = expl.attribution[0].numpy()
    lim = float(np.quantile(np.abs(a), 0.99)) or float(np.abs(a).max()) or 1.0  # 1% outliers saturate
    ax.imshow(x, origin="lower", aspect="auto", extent=extent, cmap="gray", vmin=vmin, vmax=vmax)
    im = ax.imshow(a, origin="lower", aspect="auto", extent=extent, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.6)
    fig.colorbar(im, ax=ax, label="attribution")
    ax.set(title=f"{expl.method} attribution (class {name(expl.target)})", xlabel="time (s)")
    _freq_axis(ax, cfg, n_freq)
    s, a_ = expl.scores.get("spectrogram", {}), expl.scores.get("audio", {})
    fig.suptitle(f"predicted {name(expl.pred)} (p={float(expl.probs[expl.pred]):.2f}), {expl.condition}, "
                 f"{expl.method} / {expl.mask_name}: FF {s.get('FF', np.nan):.3f} (audio {a_.get('FF', np.nan):.3f}), "
                 f"FidIn {s.get('FidIn', np.nan):.0f} (audio {a_.get('FidIn', np.nan):.0f})")
    return fig


def audio_players(expl: ClipExplanation) -> dict:
    """``IPython.display.Audio`` players ``{"original", "masked", "complement"}`` at the model rate,
    not loudness-normalised (so a masked clip sounds as quiet as it is; samples clipped to [-1, 1])."""
    from IPython.display import Audio

    sig = {"original": expl.waveform, "masked": expl.audio_in, "complement": expl.audio_out}
    return {k: Audio(v.clamp(-1, 1).numpy(), rate=expl.sample_rate, normalize=False) for k, v in sig.items()}


def players_html(expl: ClipExplanation):
    """``IPython.display.HTML``: the three :func:`audio_players` side by side, labelled."""
    from IPython.display import HTML

    cells = "".join(f"<td style='text-align:left'><b>{k}</b><br>{a._repr_html_()}</td>"
                    for k, a in audio_players(expl).items())
    return HTML(f"<table><tr>{cells}</tr></table>")


def save_explanation(expl: ClipExplanation, folder, stem: str, class_names=None, fig=None) -> dict:
    """Write ``<stem>_clip.wav``, ``<stem>_in.wav`` (masked), ``<stem>_out.wav`` (complement) as
    16-bit WAV at the model rate ``expl.sample_rate`` (:func:`audiointerp.audio_io.write_audio`,
    samples clipped to [-1, 1]) and ``<stem>.png`` (``fig``, or :func:`plot_explanation`; 120 dpi).

    Returns:
        ``{"clip", "in", "out", "png"}`` -> Path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {part: write_audio(folder / f"{stem}_{part}.wav", sig, expl.sample_rate)
             for part, sig in (("clip", expl.waveform), ("in", expl.audio_in), ("out", expl.audio_out))}
    own = fig is None
    fig = plot_explanation(expl, class_names) if own else fig
    paths["png"] = folder / f"{stem}.png"
    fig.savefig(paths["png"], dpi=120)
    if own:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return paths
