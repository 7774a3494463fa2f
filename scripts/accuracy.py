"""Accuracy of a classifier checkpoint on ESC-50 (not a test): prints figures, asserts nothing.

Prints the top-1 accuracy on the chosen fold(s) with a seeded 95% percentile-bootstrap CI over
clips, the weakest classes and the forward cost; writes the per-class accuracy (CSV), the
misclassified clips (CSV) and the confusion-matrix figure next to the checkpoint, and with
--card rewrites the checkpoint's model card (<checkpoint>.md) with all of it.

Usage (ESC50_ROOT set):
  .venv/bin/python scripts/accuracy.py --checkpoint weights/compact_mel.pt [--fold 5] [--card]
      [--cv runs/cv_mel/cv.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    """Evaluate a checkpoint and print its accuracy with the bootstrap CI; returns the exit status."""
    from audiointerp.errors import AudioInterpError
    from audiointerp.evaluate import evaluate_checkpoint, model_card, plot_confusion
    from audiointerp.models import read_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="weights/compact_mel.pt")
    ap.add_argument("--fold", type=lambda s: [int(f) for f in s.split(",")], default=[5],
                    help="fold(s) to evaluate on, e.g. 5 or 1,2,3,4,5")
    ap.add_argument("--n-resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--card", action="store_true", help="rewrite <checkpoint>.md with the report")
    ap.add_argument("--cv", default=None, help="cv.json of the recipe's cross-validation, for the card")
    args = ap.parse_args(argv)

    try:
        ckpt_path = Path(args.checkpoint)
        report = evaluate_checkpoint(ckpt_path, args.fold, n_resamples=args.n_resamples, seed=args.seed,
                                     measure_cost=True)
        ckpt = read_checkpoint(ckpt_path)
        cv = json.loads(Path(args.cv).read_text()) if args.cv else None
    except AudioInterpError as exc:
        print(f"accuracy: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError) as exc:
        print(f"accuracy: error: cannot read --cv {args.cv}: {exc}", file=sys.stderr)
        return 2

    stem = ckpt_path.with_suffix("")
    figure = stem.parent / f"{stem.name}_confusion.png"
    plot_confusion(report, figure)
    report.per_class.to_csv(stem.parent / f"{stem.name}_per_class.csv", index=False)
    report.errors().to_csv(stem.parent / f"{stem.name}_errors.csv", index=False)
    print(json.dumps({**report.summary(), "forward_ms_per_clip": round(report.ms_per_clip, 2)}, indent=2))
    if cv:
        print(f"{cv['n_folds']}-fold cross-validation: {cv['mean']:.4f} +- {cv['std']:.4f}")
    if args.card:
        card = model_card(ckpt, ms_per_clip=report.ms_per_clip, report=report, figure=figure.name, cv=cv)
        ckpt_path.with_suffix(".md").write_text(card)
        print(f"wrote {ckpt_path.with_suffix('.md')}")
    print(f"accuracy: {report.accuracy:.4f} [{report.ci_low:.4f}, {report.ci_high:.4f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
