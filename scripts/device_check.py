"""GPU check: train one short epoch and run the main job on a few clips on a device, and compare with the CPU.

Prints, per device: the seconds of one training epoch; for the main job on ``--clips`` fold-5 clips
with every built-in method and both domains: the seconds per clip and method; and, between the device
and the reference device (default the CPU): the largest difference of the class probabilities
(max |Δp| over the clips' softmax outputs), of FF and AD over every logged row, and the share of rows
whose FidIn, AI and prediction agree. A figure to read, not a test: never make tests depend on a GPU.

Usage (on a machine with a GPU):

    .venv/bin/python scripts/device_check.py --device cuda --clips 16 --out /tmp/device_check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_METHODS = "saliency,gradcam,shap,lime,piq,l2i,lmac,lmac_ft"


def _train_epoch(device: str, features: str, out: Path, limit) -> float:
    """Seconds of one training epoch of the default CompactCNN recipe on ``device``."""
    from audiointerp.fit import TrainConfig, train

    t0 = time.perf_counter()
    train(TrainConfig(features=features, epochs=1, limit=limit, device=device, seed=0), out, progress=False)
    return time.perf_counter() - t0


def _main_job(checkpoint: str, methods: list, clips: int, device: str, results: Path, lime_nsamples: int) -> dict:
    """Run the main job's methods on ``clips`` clips into ``results``; seconds per clip per method."""
    from audiointerp.runner import RunConfig, run

    out = run(RunConfig(checkpoint=checkpoint, methods=methods, limit=clips, results=str(results), device=device,
                        lime_nsamples=lime_nsamples), progress=False)
    return {m: out[m]["seconds"] / max(1, out[m]["clips_computed"]) for m in methods}


def _probabilities(checkpoint: str, clips: int, device: str):
    """Softmax outputs ``[clips, n_classes]`` of the first fold-5 clips on ``device`` (as CPU float64)."""
    from audiointerp.data import ESC50, fold_features
    from audiointerp.models import fuse_for_inference, load_classifier
    from audiointerp.scoring import class_probabilities

    model, ex, _ = load_classifier(checkpoint, device=device)
    ds = ESC50(None, (5,), ex.cfg.sample_rate, ex.cfg.duration)
    feats = fold_features(ds, ex.cfg)[:clips]
    return class_probabilities(fuse_for_inference(model), feats).double().cpu()


def _compare(a: Path, b: Path) -> dict:
    """Row-by-row differences of two results folders of the same runs (same clips, masks, domains)."""
    import numpy as np

    from audiointerp.tables import load_results

    x, y = load_results(a), load_results(b)
    keys = ["model", "method", "condition", "mask", "filename", "domain"]
    m = x.merge(y, on=keys, suffixes=("_a", "_b"))
    if len(m) != len(x) or len(m) != len(y):
        raise SystemExit(f"the two result sets hold different rows ({len(x)} and {len(y)}, {len(m)} shared)")
    out = {"rows": len(m)}
    for col in ("FF", "AD", "AG", "SPS", "COMP"):
        out[f"max |Δ{col}|"] = float(np.nanmax(np.abs(m[f"{col}_a"] - m[f"{col}_b"])))
    for col in ("FidIn", "AI", "pred"):
        out[f"{col} agreement"] = float((m[f"{col}_a"] == m[f"{col}_b"]).mean())
    per_method = m.assign(fid=(m["FidIn_a"] == m["FidIn_b"])).groupby("method")["fid"].mean()
    out["FidIn agreement per method"] = {k: round(float(v), 4) for k, v in per_method.items()}
    out["max |Δ recon_snr_db|"] = float(np.nanmax(np.abs(m["recon_snr_db_a"] - m["recon_snr_db_b"])))
    return out


def main(argv=None) -> int:
    """Run the check and print its figures (exit status 2 with one line on a user error)."""
    from audiointerp.devices import describe_device, resolve_device
    from audiointerp.errors import AudioInterpError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="weights/compact_mel.pt")
    ap.add_argument("--device", default="cuda", help="the device to check (cuda, cuda:N, mps, cpu)")
    ap.add_argument("--reference", default="cpu", help="the device to compare with")
    ap.add_argument("--clips", type=int, default=16, help="fold-5 clips of the main job")
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--lime-nsamples", type=int, default=300)
    ap.add_argument("--train-limit", type=int, default=None, help="clips per split of the training epoch (all)")
    ap.add_argument("--features", default="mel", choices=["mel", "stft"])
    ap.add_argument("--out", default="/tmp/device_check")
    ap.add_argument("--skip-training", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    methods = [m for m in args.methods.split(",") if m]
    try:
        devices = {"device": resolve_device(args.device), "reference": resolve_device(args.reference)}
        report = {k: describe_device(v) for k, v in devices.items()}
        for role, dev in devices.items():
            tag = f"{role}-{str(dev).replace(':', '')}"
            if not args.skip_training:
                report[f"{role} training epoch (s)"] = round(
                    _train_epoch(str(dev), args.features, out / f"train_{tag}.pt", args.train_limit), 2)
            report[f"{role} s per clip and method"] = {
                m: round(s, 3) for m, s in _main_job(args.checkpoint, methods, args.clips, str(dev),
                                                     out / f"results_{tag}", args.lime_nsamples).items()}
        pa = _probabilities(args.checkpoint, args.clips, str(devices["device"]))
        pb = _probabilities(args.checkpoint, args.clips, str(devices["reference"]))
        report["max |Δp|"] = float((pa - pb).abs().max())
        tags = [f"{role}-{str(dev).replace(':', '')}" for role, dev in devices.items()]
        report["rows"] = _compare(out / f"results_{tags[0]}", out / f"results_{tags[1]}")
    except AudioInterpError as exc:
        print(f"device_check: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    (out / "device_check.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "device_check.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
