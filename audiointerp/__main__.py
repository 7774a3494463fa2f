"""Command line: ``python -m audiointerp train|evaluate|run|grid|tables|data ...``.

The options of ``train``, ``run`` and ``grid`` are derived from the fields of
:class:`audiointerp.fit.TrainConfig`, :class:`audiointerp.runner.RunConfig` and
:class:`audiointerp.grid.GridConfig` (:mod:`audiointerp.config`): the help shows each default and the valid values. User errors
(bad paths, unknown names, mismatched checkpoints, another run's folder) print one line
``audiointerp: error: ...`` and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import add_options, from_options


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks (the environment variables)."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (no usage block), exit status 2."""

    def error(self, message):
        """Print ``<prog>: error: <message> (see <prog> --help)`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the command line (sub-commands train, evaluate, run, grid, tables, data)."""
    from .fit import TrainConfig
    from .grid import GridConfig
    from .runner import RunConfig
    from .settings import environment_help

    epilog = environment_help()
    p = _Parser(prog="audiointerp", description=__doc__.splitlines()[0], epilog=epilog,
                                formatter_class=_Formatter)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, help):
        return sub.add_parser(name, help=help, description=help, epilog=epilog, formatter_class=_Formatter)

    t = command("train", "train a classifier (folds 1-3 train, 4 validation, 5 test)")
    add_options(t, TrainConfig)
    t.add_argument("--cross-validation", action="store_true",
                   help="5-fold cross-validation (each fold in turn the test fold): --out is then a folder")
    t.add_argument("--out", required=True, help="checkpoint path, e.g. weights/compact_mel.pt")

    e = command("evaluate", "accuracy of a checkpoint on a fold, with a bootstrap 95%% CI (last line: the accuracy)")
    e.add_argument("--checkpoint", required=True, help="classifier checkpoint")
    e.add_argument("--fold", type=int, default=5, help="fold to evaluate on [default: 5]")
    e.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples of the CI [default: 1000]")
    e.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N, mps [default: auto]")

    r = command("run", "explain, mask and score a fold; per-clip logs to --results (resumable)")
    add_options(r, RunConfig)

    g = command("grid", "the experiment grid (cells x methods) on Dask: sharded, resumable; the logs of `run` "
                        "(exit status 2 when tasks failed, listing them)")
    add_options(g, GridConfig)

    tb = command("tables", "rebuild the tables and figures from the logs in --results")
    tb.add_argument("--results", default="results", help="results folder [default: results]")
    tb.add_argument("--out", default="supplementary", help="output folder [default: supplementary]")
    tb.add_argument("--overwrite", action="store_true",
                    help="replace the tables of an earlier build in --out (refused without it)")
    tb.add_argument("--model", default=None, help="one model's folder only [default: every model]")
    tb.add_argument("--mask", default="topK_30_pos", help="the mask of the condition x method tables "
                                                          "[default: topK_30_pos]")
    tb.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples of the 95%% CIs "
                                                                  "[default: 1000]")
    tb.add_argument("--seed", type=int, default=0, help="bootstrap seed [default: 0]")

    d = command("data", "download and check the official ESC-50 release")
    d.add_argument("--dest", default="data", help="parent folder of ESC-50/ [default: data]")
    return p


def main(argv=None) -> int:
    """Entry point; returns the exit status (0, 2 for a user error, 130 when interrupted)."""
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

        cfg = from_options(TrainConfig, args)
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

        r = evaluate_checkpoint(args.checkpoint, (args.fold,), n_resamples=args.n_resamples, device=args.device)
        print(json.dumps(r.summary(), indent=2))
        print(f"fold {args.fold} accuracy: {r.accuracy:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}]")
    elif args.command == "run":
        from .runner import RunConfig, run

        s = run(from_options(RunConfig, args))
        print(json.dumps(s, indent=2))
    elif args.command == "grid":
        from .grid import GridConfig, run_grid

        result = run_grid(from_options(GridConfig, args), progress=None)
        print(json.dumps(result.summary(), indent=2))
        result.raise_for_failures()
    elif args.command == "tables":
        from .tables import build_tables

        out = build_tables(args.results, args.out, model=args.model, mask=args.mask, n_resamples=args.n_resamples,
                           seed=args.seed, overwrite=args.overwrite)
        print(out["summary_markdown"])
    elif args.command == "data":
        from .data import download_esc50

        root = download_esc50(args.dest)
        print(f"ESC-50 ready in {root}: export ESC50_ROOT={root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
