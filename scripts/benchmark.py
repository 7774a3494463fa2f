"""Benchmark of the main job (not a test): prints figures, asserts nothing.

Measures on this machine, for a checkpoint:
  * the forward cost of the classifier, batched, in ms per clip (channels_last vs. contiguous);
  * the bare model passes the 400-clip experiment needs (the floor): one forward of the fold,
    2 x n_masks forwards per clip and method, and SHAP's nsamples forward+backward per clip;
  * clips/s of each method through the real runner on --clips clips, and the projected minutes
    of the full fold (all methods), to compare with the 20-minute budget.

Usage: .venv/bin/python scripts/benchmark.py --checkpoint weights/compact_mel.pt [--clips 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def timed(fn, repeat=3):
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main() -> None:
    from audiointerp.data import ESC50, fold_features
    from audiointerp.masks import MASK_NAMES
    from audiointerp.models import load_classifier
    from audiointerp.runner import RunConfig, run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="weights/compact_mel.pt")
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--methods", default="saliency,gradcam,shap")
    ap.add_argument("--shap-nsamples", type=int, default=32)
    ap.add_argument("--fold-size", type=int, default=400)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    model, extractor, ckpt = load_classifier(args.checkpoint)
    cfg = extractor.cfg
    ds = ESC50(None, (5,), cfg.sample_rate, cfg.duration)
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
    methods = args.methods.split(",")
    n = args.fold_size
    floor = n * ms / 1000 + len(methods) * n * per_clip_masks + ("shap" in methods) * n * t_shap
    print(f"bare passes per clip: masks ({2 * n_masks} inputs) {1000 * per_clip_masks:.0f} ms, "
          f"SHAP {args.shap_nsamples} fwd+bwd {1000 * t_shap:.0f} ms")
    print(f"floor of the {n}-clip job ({', '.join(methods)}): {floor / 60:.1f} min")

    total = 0.0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            s = run(RunConfig(checkpoint=args.checkpoint, methods=[m], limit=args.clips, results=tmp,
                              shap_nsamples=args.shap_nsamples), progress=False)[m]
            cps = s["clips_computed"] / s["seconds"]
            total += n / cps
            rows.append((m, cps, s["attribution_seconds"] / args.clips, s["mask_forward_seconds"] / args.clips))
    print(f"\n| method | clips/s | attribution s/clip | masks+forward s/clip | projected {n} clips |")
    print("|---|---|---|---|---|")
    for m, cps, a, f in rows:
        print(f"| {m} | {cps:.2f} | {a:.3f} | {f:.3f} | {n / cps / 60:.1f} min |")
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
    print(f"\nprojected main job ({n} clips, {', '.join(methods)}): {total / 60:.1f} min "
          f"(+ features and tables); budget 20 min")


if __name__ == "__main__":
    main()
