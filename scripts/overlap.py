"""Overlap test of one classifier (audiointerp.overlap): per method, how often the map of clip A's class
matches A better than B in an equal-RMS mix of two fold-5 clips of different classes.

Writes supplementary/overlap/overlap_pairs_<model>.csv (one row per method and pair) and the summary of
every model run so far, overlap.csv and overlap.md. Methods whose explainer cannot be built (e.g. a
learned interpreter without its weights file) are skipped with one line. The baselines energy and
random are always included.

Usage: .venv/bin/python scripts/overlap.py --checkpoint weights/compact_mel.pt --methods saliency,gradcam,shap
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    """Run the overlap test from the command line; returns the exit status."""
    import torch

    from audiointerp.errors import AudioInterpError
    from audiointerp.overlap import overlap_test, summary_table, write_overlap

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="weights/compact_mel.pt")
    ap.add_argument("--methods", default="saliency,gradcam,shap,piq,l2i", help="comma-separated method names")
    ap.add_argument("--pairs", type=int, default=100, help="number of (A, B) pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="supplementary/overlap")
    ap.add_argument("--root", default=None, help="ESC-50 root (default: the ESC50_ROOT environment variable)")
    ap.add_argument("--batch", type=int, default=8, help="pairs per batch")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N, mps")
    ap.add_argument("--lime-nsamples", type=int, default=300, help="LIME samples per pair (the main job's 300)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t = time.perf_counter()
    try:
        df = overlap_test(args.checkpoint, [m.strip() for m in args.methods.split(",") if m.strip()], args.pairs,
                          args.seed, args.root, args.batch, skip_unavailable=True, device=args.device,
                          method_options={"lime_nsamples": args.lime_nsamples})
        for method, message in df.attrs["skipped"].items():
            print(f"skipped {method}: {message}")
        paths = write_overlap(df, args.out, seed=args.seed)
    except AudioInterpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t
    print(summary_table(df, seed=args.seed).round(3).to_string())
    print("attribution time (s): " + ", ".join(f"{m} {s:.1f}" for m, s in df.attrs["seconds"].items()))
    print(f"wall time {wall:.1f} s; wrote {', '.join(str(p) for p in [*paths['pairs'], paths['csv'], paths['md']])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
