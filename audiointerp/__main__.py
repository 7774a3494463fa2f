"""Command line: ``python -m audiointerp train|evaluate|run|tables|data ...``.

User errors (bad paths, unknown names, mismatched checkpoints) print one line
``audiointerp: error: ...`` and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys


def _csv_list(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def _floats(s: str) -> tuple[float, ...]:
    return tuple(float(v) for v in _csv_list(s))


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the command line (sub-commands train, evaluate, run, tables, data)."""
    p = argparse.ArgumentParser(prog="audiointerp", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a classifier (folds 1-3 train, 4 validation, 5 test)")
    t.add_argument("--features", choices=["mel", "stft"], default="mel")
    t.add_argument("--architecture", default="CompactCNN")
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--mixup-alpha", type=float, default=0.4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, default=None, help="first N clips per split (smoke tests)")
    t.add_argument("--init-from", default=None, help="start from this checkpoint's weights (a second schedule)")
    t.add_argument("--cross-validation", action="store_true",
                   help="5-fold cross-validation (each fold in turn the test fold): --out is then a folder")
    t.add_argument("--out", required=True, help="checkpoint path, e.g. weights/compact_mel.pt")

    e = sub.add_parser("evaluate", help="accuracy of a checkpoint on a fold, with a bootstrap 95%% CI "
                                        "(last line: the accuracy)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--fold", type=int, default=5)
    e.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples of the CI")

    r = sub.add_parser("run", help="explain, mask and score a fold; logs to --results")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--methods", type=_csv_list, default=["saliency", "gradcam", "shap"],
                   help="saliency, gradcam, shap, piq, l2i (comma-separated)")
    r.add_argument("--interpreters", type=_csv_list, default=[],
                   help="learned interpreters as method=path, e.g. piq=weights/piq_compact_mel.pt "
                        "(default: <method>_<classifier>.pt next to the classifier)")
    r.add_argument("--condition", default="clean",
                   help="clean, white, room, horse, white_gen, pink, or a noise file path")
    level = r.add_mutually_exclusive_group()
    level.add_argument("--alpha", type=float, default=None, help="clip weight in the mix (default 0.6)")
    level.add_argument("--snr-db", type=float, default=None, help="clip-to-noise ratio in dB (instead of --alpha)")
    r.add_argument("--noise-offset", type=float, default=0.0, help="seconds skipped at the start of the noise")
    r.add_argument("--domains", type=_csv_list, default=["spectrogram", "audio"])
    r.add_argument("--inversion", default="gain", help="gain (mask on the clip's STFT) or pinv")
    r.add_argument("--audio-examples", type=int, default=0, help="write the masks' audio of the first N clips")
    r.add_argument("--fold", type=int, default=5)
    r.add_argument("--limit", type=int, default=None)
    r.add_argument("--masks", type=_csv_list, default=None, help="comma-separated mask names (default: all 14)")
    r.add_argument("--k", type=_floats, default=(0.05, 0.30, 0.50), help="top-K fractions, e.g. 0.05,0.3,0.5")
    r.add_argument("--tau", type=_floats, default=(0.25, 0.50, 0.75), help="thresholds, e.g. 0.25,0.5,0.75")
    r.add_argument("--shap-nsamples", type=int, default=32)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--results", default="results")

    tb = sub.add_parser("tables", help="rebuild the summary tables from the logs in --results")
    tb.add_argument("--results", default="results")
    tb.add_argument("--out", default="supplementary")
    tb.add_argument("--model", default=None)
    tb.add_argument("--mask", default="topK_30_pos", help="the mask of the condition x method tables")
    tb.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples of the 95%% CIs")
    tb.add_argument("--seed", type=int, default=0, help="bootstrap seed")

    d = sub.add_parser("data", help="download and check the official ESC-50 release")
    d.add_argument("--dest", default="data")
    return p


def main(argv=None) -> int:
    """Entry point; returns the exit status."""
    from .errors import AudioInterpError

    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except AudioInterpError as exc:
        print(f"audiointerp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("audiointerp: interrupted (a run resumes where it stopped)", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    if args.command == "train":
        from .fit import TrainConfig, cross_validate, train

        cfg = TrainConfig(features=args.features, architecture=args.architecture, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, mixup_alpha=args.mixup_alpha,
                          seed=args.seed, limit=args.limit, init_from=args.init_from)
        if args.cross_validation:
            cv = cross_validate(cfg, args.out)
            for r in cv["folds"]:
                print(f"test fold {r['test_fold']} (validation {r['val_fold']}): {r['test_acc']:.4f}")
            print(f"{cv['n_folds']}-fold cross-validation accuracy: {cv['mean']:.4f} +- {cv['std']:.4f}")
        else:
            m = train(cfg, args.out)
            print(json.dumps({k: v for k, v in m.items() if k != "history"}))
            print(f"fold 5 accuracy: {m['test_acc']:.4f}")
    elif args.command == "evaluate":
        from .evaluate import evaluate_checkpoint

        r = evaluate_checkpoint(args.checkpoint, (args.fold,), n_resamples=args.n_resamples)
        print(json.dumps(r.summary(), indent=2))
        print(f"fold {args.fold} accuracy: {r.accuracy:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}]")
    elif args.command == "run":
        from .runner import RunConfig, run

        from .errors import ConfigError

        bad = [v for v in args.interpreters if "=" not in v]
        if bad:
            raise ConfigError(f"--interpreters takes method=path, got {bad[0]!r}")
        interpreters = dict(v.split("=", 1) for v in args.interpreters)
        s = run(RunConfig(checkpoint=args.checkpoint, methods=args.methods, interpreters=interpreters,
                          condition=args.condition,
                          alpha=args.alpha, snr_db=args.snr_db, noise_offset=args.noise_offset,
                          domains=tuple(args.domains), inversion=args.inversion,
                          audio_examples=args.audio_examples, fold=args.fold, limit=args.limit, masks=args.masks, k=args.k, tau=args.tau,
                          shap_nsamples=args.shap_nsamples, seed=args.seed, results=args.results))
        print(json.dumps(s, indent=2))
    elif args.command == "tables":
        from .tables import build_tables

        out = build_tables(args.results, args.out, model=args.model, mask=args.mask,
                           n_resamples=args.n_resamples, seed=args.seed)
        print(out["summary_markdown"])
    elif args.command == "data":
        from .data import download_esc50

        root = download_esc50(args.dest)
        print(f"ESC-50 ready in {root}: export ESC50_ROOT={root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
