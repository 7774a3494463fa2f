"""How LIME maps change with fewer samples (not a test): prints figures, asserts nothing.

For --clips real fold-5 clips spread over the fold and the committed mel classifier, LIME
(quickshift, as the prior art) explains the predicted class with the prior art's 1000 samples
(seed 0: the reference) and, with independent draws (seed 1) on the reference's superpixels, with
n = 100, 200, 300, 500 and 1000 samples: the 1000-sample row is the noise floor of the samples,
what two 1000-sample maps disagree by anyway. A last row is a whole second 1000-sample run (seed 1
also for quickshift, whose seed breaks ties such as bins at the -100 dB floor, so its superpixels
can differ): what two runs of the method with different seeds disagree by. Per clip, over all bins
of the map:

  * Pearson r and Spearman rank rho of the map with the reference;
  * IoU of their topK_30_pos masks (the tables' default mask), which is what the scores see;

then mean and minimum over the clips, and the seconds per clip of each n.

Usage: .venv/bin/python scripts/lime_samples.py [--checkpoint weights/compact_mel.pt] [--clips 16]
       [--nsamples 100,200,300,500,1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def correlations(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """Pearson r, Spearman rho (average ranks for ties) and topK_30_pos IoU of two maps (any shape)."""
    from scipy.stats import pearsonr, spearmanr

    from audiointerp.masks import top_k_pos

    u, v = a.flatten().double().numpy(), b.flatten().double().numpy()
    r = pearsonr(u, v).statistic if u.std() > 0 and v.std() > 0 else float("nan")
    rho = spearmanr(u, v).statistic if u.std() > 0 and v.std() > 0 else float("nan")
    ma, mb = top_k_pos(a[None], 0.3).bool(), top_k_pos(b[None], 0.3).bool()
    union = (ma | mb).sum().item()
    iou = (ma & mb).sum().item() / union if union else 1.0
    return float(r), float(rho), float(iou)


def main() -> None:
    """Measure and print the sample-count figures (see the module docstring)."""
    from audiointerp.data import ESC50, fold_features
    from audiointerp.interpret import LimeMethod, make_method
    from audiointerp.models import load_classifier

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="weights/compact_mel.pt")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--nsamples", default="100,200,300,500,1000")
    ap.add_argument("--reference", type=int, default=1000, help="samples of the reference map (the prior art)")
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()
    ns = [int(v) for v in args.nsamples.split(",")]

    model, extractor, _ = load_classifier(args.checkpoint)
    cfg = extractor.cfg
    ds = ESC50(None, (5,), cfg.sample_rate, cfg.duration)
    # clips spread over the fold (every class has 8 clips in fold 5), not the first few
    idx = np.linspace(0, len(ds) - 1, args.clips).round().astype(int)
    feats = fold_features(ds, cfg)[torch.from_numpy(idx)]
    with torch.inference_mode():
        target = model(feats.contiguous(memory_format=torch.channels_last)).argmax(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.clips} fold-5 clips "
          f"(indices {idx.min()}..{idx.max()}), {args.checkpoint}, LIME quickshift, batches of {args.batch}")

    class OnSuperpixels(LimeMethod):
        """LIME with given superpixels: only the samples change with the seed."""

        def __init__(self, segments, **kw):
            super().__init__(model, **kw)
            self.fixed = segments

        def segments(self, x, seeds=None):
            return self.fixed

    ref_method = make_method("lime", model, lime_nsamples=args.reference, lime_batch=args.batch, seed=0)
    rerun = make_method("lime", model, lime_nsamples=args.reference, lime_batch=args.batch, seed=1)
    keys = [*ns, "rerun"]
    rows = {n: [] for n in keys}
    seconds = {n: 0.0 for n in keys}
    same_segments = 0
    for j, i in enumerate(idx):
        x, t, s = feats[j:j + 1], target[j:j + 1], [int(i)]
        ref = ref_method.attribute(x, t, seeds=s)[0, 0]
        seg = ref_method.segments(x, s)
        same_segments += bool(torch.equal(seg, rerun.segments(x, s)))
        for n in keys:
            m = rerun if n == "rerun" else OnSuperpixels(seg, nsamples=n, batch=args.batch, seed=1)
            t0 = time.perf_counter()
            a = m.attribute(x, t, seeds=s)[0, 0]
            seconds[n] += time.perf_counter() - t0
            rows[n].append(correlations(a, ref))
        print(f"  clip {j + 1}/{len(idx)} done", flush=True)

    print(f"\nagreement with the {args.reference}-sample map (seed 0) of maps from independent draws (seed 1); "
          f"quickshift gave the same superpixels for both seeds on {same_segments}/{len(idx)} clips")
    print("\n| samples | Pearson r mean (min) | Spearman rho mean (min) | topK_30_pos IoU mean (min) | s/clip |")
    print("|---|---|---|---|---|")
    for n in keys:
        v = np.array(rows[n])
        label = {args.reference: f"{n} (noise floor of the samples)",
                 "rerun": f"{args.reference}, seed 1 also for quickshift (a second run)"}.get(n, str(n))
        print(f"| {label} | {np.nanmean(v[:, 0]):.3f} ({np.nanmin(v[:, 0]):.3f}) | {np.nanmean(v[:, 1]):.3f} "
              f"({np.nanmin(v[:, 1]):.3f}) | {v[:, 2].mean():.3f} ({v[:, 2].min():.3f}) | "
              f"{seconds[n] / len(idx):.2f} |")


if __name__ == "__main__":
    main()
