"""Benchmark of the main job (not a test): prints figures, asserts nothing.

Measures on this machine, for a checkpoint:
  * the forward cost of the classifier, batched, in ms per clip (channels_last vs. contiguous);
  * the bare model passes the 400-clip experiment needs (the floor): one forward of the fold,
    2 x n_masks forwards per clip and method, and SHAP's nsamples forward+backward per clip;
  * the audio domain: re-synthesis of one chunk's masked inputs (gain and pinv inversions),
    re-analysis, and the reconstruction SNR of unmasked clips through each inversion;
  * clips/s of each of the main job's methods (--methods; LIME at --main-lime-nsamples) through the
    real runner on --clips clips (both domains), and the projected minutes of the full fold;
  * LIME (--lime-clips real fold-5 clips, --lime-nsamples samples): s/clip beside its bare
    forward passes (the same number of inputs, in the same batches, through the same
    BatchNorm-folded model, and through the model as loaded), and the ratio; each clip's LIME and
    its bare passes are timed back to back, so a busy CPU slows both.

Usage: .venv/bin/python scripts/benchmark.py --checkpoint weights/compact_mel.pt [--clips 40]
       [--lime-clips 4] [--lime-only]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def timed(fn, repeat=3):
    """Mean wall time in seconds of ``repeat`` calls of ``fn`` (after one warm-up call)."""
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def lime_cost(model, feats: torch.Tensor, nsamples: int, batch: int) -> None:
    """Print LIME's seconds per clip beside its bare forward passes (see the module docstring)."""
    from audiointerp.interpret import make_method

    lime = make_method("lime", model, lime_nsamples=nsamples, lime_batch=batch)
    with torch.inference_mode():
        target = model(feats.contiguous(memory_format=torch.channels_last)).argmax(1)

    def bare(m, x):
        """``nsamples`` forward passes of ``x`` in LIME's batches (inputs built once, not timed)."""
        sizes = [batch] * (nsamples // batch) + ([nsamples % batch] if nsamples % batch else [])
        inputs = {n: x.expand(n, *x.shape[1:]).contiguous(memory_format=torch.channels_last) for n in set(sizes)}
        t = time.perf_counter()
        with torch.inference_mode():
            for n in sizes:
                torch.softmax(m(inputs[n]), dim=1)
        return time.perf_counter() - t

    lime.attribute(feats[:1], target[:1], seeds=[0])  # warm-up: imports, allocator
    t_lime = t_seg = t_fused = t_model = 0.0
    for i in range(len(feats)):
        x = feats[i:i + 1]
        t = time.perf_counter()
        lime.segments(x, seeds=[i])
        t_seg += time.perf_counter() - t
        t = time.perf_counter()
        lime.attribute(x, target[i:i + 1], seeds=[i])
        t_lime += time.perf_counter() - t
        t_fused += bare(lime.scorer, x)
        t_model += bare(model, x)
    n = len(feats)
    print(f"\nLIME ({nsamples} samples, quickshift, batches of {batch}), mean of {n} fold-5 clips: "
          f"{t_lime / n:.2f} s/clip (quickshift {t_seg / n:.2f} s of it)")
    print(f"  bare forward passes ({nsamples} inputs, same batches): {t_fused / n:.2f} s/clip through the "
          f"BatchNorm-folded model LIME uses, {t_model / n:.2f} s/clip through the model as loaded")
    print(f"  ratio LIME / bare passes: {t_lime / t_fused:.2f} (folded), {t_lime / t_model:.2f} (as loaded); "
          f"the prior art: 13.5 s/clip on this CPU")


def main() -> None:
    """Measure and print the figures of the main job (see the module docstring)."""
    from audiointerp.data import ESC50, fold_features
    from audiointerp.devices import cpu_model
    from audiointerp.masks import MASK_NAMES
    from audiointerp.models import load_classifier
    from audiointerp.runner import RunConfig, run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="weights/compact_mel.pt")
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--methods", default="saliency,gradcam,shap,lime,piq,l2i,lmac,lmac_ft",
                    help="the main job's methods (make benchmark passes the Makefile's METHODS)")
    ap.add_argument("--shap-nsamples", type=int, default=32)
    ap.add_argument("--fold-size", type=int, default=400)
    ap.add_argument("--lime-clips", type=int, default=4, help="clips for the LIME cost (0: skip)")
    ap.add_argument("--lime-nsamples", type=int, default=1000, help="LIME samples for the LIME cost (the prior art's)")
    ap.add_argument("--main-lime-nsamples", type=int, default=RunConfig.lime_nsamples,
                    help="LIME samples of the main job's run (RunConfig's default)")
    ap.add_argument("--lime-batch", type=int, default=50)
    ap.add_argument("--lime-only", action="store_true", help="only the LIME cost")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {cpu_model()}")

    model, extractor, ckpt = load_classifier(args.checkpoint)
    cfg = extractor.cfg
    ds = ESC50(None, (5,), cfg.sample_rate, cfg.duration)
    if args.lime_clips:
        lime_cost(model, fold_features(ds, cfg)[:args.lime_clips], args.lime_nsamples, args.lime_batch)
    if args.lime_only:
        return
    t = time.perf_counter()
    wav = ds.waveforms(range(64))
    t_read = time.perf_counter() - t
    t_feat = timed(lambda: extractor(wav), 1)
    print(f"audio read+resample: {1000 * t_read / 64:.1f} ms/clip; features: {1000 * t_feat / 64:.2f} ms/clip")
    feats = fold_features(ds, cfg)

    x = feats[:64]
    with torch.inference_mode():
        t_cl = timed(lambda: model(x.contiguous(memory_format=torch.channels_last)))
        contiguous = load_classifier(args.checkpoint)[0].to(memory_format=torch.contiguous_format)
        t_co = timed(lambda: contiguous(x.contiguous()))
    ms = 1000 * t_cl / len(x)
    print(f"forward, batch 64: {ms:.2f} ms/clip channels_last, {1000 * t_co / len(x):.2f} ms/clip contiguous")

    n_masks = len(MASK_NAMES)
    big = feats[:8].repeat_interleave(2 * n_masks, 0)  # one chunk of the runner: 8 clips x 28 inputs
    with torch.inference_mode():
        t_chunk = timed(lambda: model(big.contiguous(memory_format=torch.channels_last)), 2)
    per_clip_masks = t_chunk / 8
    xg = feats[:args.shap_nsamples].clone().requires_grad_(True)

    def fwd_bwd():
        model.zero_grad()
        model(xg.contiguous(memory_format=torch.channels_last))[:, 0].sum().backward()

    t_shap = timed(fwd_bwd, 2)
    from audiointerp.models import fuse_for_inference

    fused = fuse_for_inference(model)
    with torch.inference_mode():
        t_fused = timed(lambda: fused(big.contiguous(memory_format=torch.channels_last)), 2)
    print(f"one chunk (8 clips x {2 * n_masks} masked inputs): {1000 * t_chunk / 8:.0f} ms/clip, "
          f"BatchNorm folded (the runner's scorer) {1000 * t_fused / 8:.0f} ms/clip")

    # Audio domain: masked inputs back to audio and re-analysed (one chunk), and the inversions' SNR.
    from audiointerp.masks import apply_mask
    from audiointerp.processing import features_only, reconstruction_snr_db, resynthesise, stft

    wav8 = wav[:8]
    x8 = feats[:8]
    spec8 = stft(wav8, cfg)[:, None]
    m = torch.rand(8, 2 * n_masks, 1, *x8.shape[-2:], generator=torch.Generator().manual_seed(0))
    x_in = apply_mask(x8[:, None], m)[0]
    t_gain = timed(lambda: resynthesise(x_in, x8[:, None], spec8, cfg.n_samples, cfg, "gain"), 1)
    audio = resynthesise(x_in, x8[:, None], spec8, cfg.n_samples, cfg, "gain")
    t_re = timed(lambda: features_only(audio.reshape(-1, cfg.n_samples), cfg), 1)
    t_pinv = timed(lambda: resynthesise(x8[:2, None], x8[:2, None], spec8[:2], cfg.n_samples, cfg, "pinv"), 1) / 2
    snr = {inv: reconstruction_snr_db(wav8, resynthesise(x8[:, None], x8[:, None], spec8, cfg.n_samples, cfg,
                                                          inv)[:, 0]) for inv in ("gain", "pinv")}
    print(f"audio domain per clip ({2 * n_masks} inputs): re-synthesis (gain) {1000 * t_gain / 8:.0f} ms, "
          f"re-analysis {1000 * t_re / 8:.0f} ms; pinv re-synthesis {1000 * t_pinv:.0f} ms per input "
          f"(x {2 * n_masks} = {2 * n_masks * t_pinv:.1f} s per clip)")
    print(f"reconstruction SNR of unmasked clips, mean over 8: gain {snr['gain'].mean():.1f} dB, "
          f"pinv {snr['pinv'].mean():.1f} dB (min {snr['pinv'].min():.1f}, max {snr['pinv'].max():.1f})")
    methods = args.methods.split(",")
    n = args.fold_size
    t_lime_passes = args.main_lime_nsamples * t_fused / (8 * 2 * n_masks)  # LIME's forwards, BatchNorm folded
    floor = (n * ms / 1000 + len(methods) * n * per_clip_masks + ("shap" in methods) * n * t_shap
             + ("lime" in methods) * n * t_lime_passes)
    print(f"bare passes per clip: masks ({2 * n_masks} inputs) {1000 * per_clip_masks:.0f} ms, "
          f"SHAP {args.shap_nsamples} fwd+bwd {1000 * t_shap:.0f} ms, "
          f"LIME {args.main_lime_nsamples} forwards {1000 * t_lime_passes:.0f} ms")
    print(f"floor of the {n}-clip job ({', '.join(methods)}): {floor / 60:.1f} min")

    total = 0.0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            s = run(RunConfig(checkpoint=args.checkpoint, methods=[m], limit=args.clips, results=tmp,
                              shap_nsamples=args.shap_nsamples, lime_nsamples=args.main_lime_nsamples),
                    progress=False)[m]
            cps = s["clips_computed"] / s["seconds"]
            total += n / cps
            rows.append((m, cps, s["attribution_seconds"] / args.clips, s["mask_forward_seconds"] / args.clips,
                         s["audio_domain_seconds"] / args.clips))
    print(f"\n| method | clips/s | attribution s/clip | spectrogram domain s/clip | audio domain s/clip "
          f"| projected {n} clips |")
    print("|---|---|---|---|---|---|")
    for m, cps, a, f, au in rows:
        print(f"| {m} | {cps:.2f} | {a:.3f} | {f:.3f} | {au:.3f} | {n / cps / 60:.1f} min |")
    # SHAP's Monte-Carlo noise at the chosen nsamples: agreement of maps from independent seeds,
    # and with a 4x larger reference, averaged over a few clips (Pearson r over all bins).
    from audiointerp.data import TRAIN_FOLDS
    from audiointerp.interpret import SHAPMethod, stratified_background

    tr = ESC50(None, TRAIN_FOLDS, cfg.sample_rate, cfg.duration)
    bg = fold_features(tr, cfg)[torch.from_numpy(stratified_background(tr.labels, 2, 0))]
    xs = feats[:4]
    with torch.no_grad():
        target = model(xs.contiguous(memory_format=torch.channels_last)).argmax(1)
    k = args.shap_nsamples

    def maps(nsamples, seed):
        return SHAPMethod(model, bg, nsamples=nsamples, seed=seed).attribute(xs, target).flatten(1)

    def r(a, b):
        return torch.stack([torch.corrcoef(torch.stack([u, v]))[0, 1] for u, v in zip(a, b)]).mean().item()

    a, b, ref = maps(k, 1), maps(k, 2), maps(4 * k, 3)
    print(f"\nSHAP noise: r(seed a, seed b) at nsamples={k}: {r(a, b):.3f}; "
          f"r(nsamples={k}, nsamples={4 * k}): {r(a, ref):.3f}")
    print(f"\nprojected main job ({n} clips, {', '.join(methods)}, both domains): {total / 60:.1f} min "
          f"(+ features and tables)")


if __name__ == "__main__":
    main()
