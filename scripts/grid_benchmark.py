"""Benchmark of the experiment grid on Dask (not a test): prints figures, asserts nothing.

Runs the same slice of the grid (default: mel clean and mel white × Saliency, Grad-CAM, SHAP ×
48 clips, all 14 masks, both domains) four ways, each into a fresh results folder with the
feature caches warm:

  * sequentially with ``run`` in this process, at 1 torch thread and at the machine's default;
  * with ``run_grid`` on a LocalCluster of 1 and of 2 single-threaded worker processes;

and prints: the wall time of each, the speedup of 2 workers over 1 (and over the sequential
run), the scheduler's overhead per task (no-op tasks, and the grid's wall time not spent inside
tasks), whether the grid's CSVs are byte-identical to the 1-thread sequential run, how far the
numbers move between 1 and 2 torch threads, and the model-pass limit: the classifier's FLOPs per
clip (``torch.utils.flop_counter``), the GFLOP/s of the bare scoring passes against this CPU's
measured matmul peak, and the pipeline's time over the bare passes it needs. Finally a projection
of the full grid (``--full-grid-results``: the run.json timings of a finished grid, e.g.
``results/``) on N = 1 … 64 workers from the measured per-task costs (``docs/grid.md``).

Usage: .venv/bin/python scripts/grid_benchmark.py [--clips 48] [--methods saliency,gradcam,shap]
       [--cells weights/compact_mel.pt:clean,weights/compact_mel.pt:white] [--shard 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def load() -> str:
    """The 1/5/15-minute load averages, as text (other work sharing the CPU shows here)."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def csv_bytes(results: Path) -> dict:
    """``{relative path: bytes}`` of every results CSV and attribution map under ``results``."""
    return {p.relative_to(results).as_posix(): p.read_bytes() for p in sorted(results.rglob("*"))
            if p.is_file() and (p.suffix == ".npy" or p.parent.name == "csvs")}


def matmul_peak(threads: int, n: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of a float32 ``n x n`` matmul at ``threads`` torch threads (best of ``repeat``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    torch.set_num_threads(before)
    return 2 * n ** 3 / best / 1e9


def model_flops(checkpoint: str) -> tuple[float, float, object, object]:
    """(forward FLOPs per clip, forward+backward FLOPs per clip, fused scorer, feature config)."""
    from torch.utils.flop_counter import FlopCounterMode

    from audiointerp.models import fuse_for_inference, load_classifier

    model, extractor, _ = load_classifier(checkpoint)
    scorer = fuse_for_inference(model)
    x = torch.randn(1, *extractor.cfg.shape)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        scorer(x)
    fwd = fc.get_total_flops()
    xg = x.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as fc:
        model(xg)[:, 0].sum().backward()
    return float(fwd), float(fc.get_total_flops()), scorer, extractor.cfg


def bare_pass_seconds(scorer, fcfg, batch: int, threads: int, repeat: int = 3) -> float:
    """Seconds per input of the bare scoring forward pass, batches of ``batch`` inputs."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.randn(batch, *fcfg.shape)
    with torch.no_grad():
        scorer(x)
        t = time.perf_counter()
        for _ in range(repeat):
            scorer(x)
    torch.set_num_threads(before)
    return (time.perf_counter() - t) / repeat / batch


def drift(a: Path, b: Path) -> dict:
    """How the logged numbers of two results roots differ: per metric the largest |difference|,
    the rows that differ at all, and the flips of pred / FidIn / AI."""
    out = {"rows": 0, "rows_differing": 0, "pred_flips": 0, "FidIn_flips": 0, "AI_flips": 0, "max_abs": {}}
    for pa in sorted(a.rglob("csvs/*.csv")):
        pb = b / pa.relative_to(a)
        da, db = pd.read_csv(pa), pd.read_csv(pb)
        key = ["filename", "domain"]
        m = da.merge(db, on=key, suffixes=("_a", "_b"))
        out["rows"] += len(m)
        cols = ["recon_snr_db", "FF", "AI", "AD", "AG", "FidIn", "SPS", "COMP"]
        diff = np.zeros(len(m), dtype=bool)
        for c in cols:
            d = (m[f"{c}_a"] - m[f"{c}_b"]).abs()
            diff |= d.fillna(0).to_numpy() > 0
            out["max_abs"][c] = max(out["max_abs"].get(c, 0.0), float(d.max()))
        out["rows_differing"] += int(diff.sum())
        out["pred_flips"] += int((m["pred_a"] != m["pred_b"]).sum())
        out["FidIn_flips"] += int((m["FidIn_a"] != m["FidIn_b"]).sum())
        out["AI_flips"] += int((m["AI_a"] != m["AI_b"]).sum())
    return out


def main() -> None:
    """Measure and print (module docstring)."""
    import dask
    from distributed import Client, LocalCluster

    from audiointerp.grid import GridConfig, run_grid
    from audiointerp.runner import RunConfig, RunContext, run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="weights/compact_mel.pt:clean,weights/compact_mel.pt:white")
    ap.add_argument("--methods", default="saliency,gradcam,shap")
    ap.add_argument("--clips", type=int, default=48, help="clips of the fold per cell")
    ap.add_argument("--shard", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--workers", default="1,2", help="LocalCluster sizes to time")
    ap.add_argument("--full-grid-results", default="results", help="run.json timings of the full grid (projection)")
    ap.add_argument("--keep", default=None, help="keep the results folders here (default: a temporary folder)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    default_threads = torch.get_num_threads()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: {cores} cores, torch {torch.__version__} ({default_threads} threads by "
          f"default), load average {load()}")
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    common = dict(methods=args.methods, limit=args.clips, chunk=args.chunk)
    root = Path(args.keep or tempfile.mkdtemp(prefix="grid-benchmark-"))

    # 0. shared work (features of the fold under each condition, SHAP's background): cached first
    t0 = time.perf_counter()
    for cell in cells:
        ckpt, _, cond = cell.partition(":")
        ctx = RunContext(RunConfig(checkpoint=ckpt, condition=cond or "clean", **common))
        ctx.features()
        if "shap" in args.methods:
            ctx.shap_background()
    print(f"shared work (features, SHAP background) warm in the cache: {time.perf_counter() - t0:.1f} s")

    times, task_log = {}, {}
    # 1. sequential, in this process
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        out = root / f"sequential-{threads}t"
        t, cpu = time.perf_counter(), time.process_time()
        for cell in cells:
            ckpt, _, cond = cell.partition(":")
            run(RunConfig(checkpoint=ckpt, condition=cond or "clean", results=str(out), **common), progress=False)
        times[f"sequential {threads} thread(s)"] = time.perf_counter() - t
        print(f"sequential run, {threads} torch thread(s): {times[f'sequential {threads} thread(s)']:.1f} s, "
              f"{(time.process_time() - cpu) / times[f'sequential {threads} thread(s)']:.2f} cores obtained "
              f"(load {load()})")
    torch.set_num_threads(default_threads)

    # 2. the grid on LocalClusters of single-threaded worker processes
    overhead_noop = None
    for n in [int(w) for w in args.workers.split(",")]:
        t = time.perf_counter()
        with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   worker_dashboard_address=None)
            client = Client(cluster)
        start = time.perf_counter() - t
        try:
            if overhead_noop is None:  # the scheduler's own cost per task: no-op tasks
                client.gather(client.map(lambda i: i, range(20), pure=False))
                t = time.perf_counter()
                client.gather(client.map(lambda i: i, range(500), pure=False))
                overhead_noop = (time.perf_counter() - t) / 500
            events = []
            cfg = GridConfig(cells=cells, results=str(root / f"grid-{n}w"), shard=args.shard, **common)
            t = time.perf_counter()
            res = run_grid(cfg, client=client, progress=False, on_task=events.append)
            wall = time.perf_counter() - t
        finally:
            client.close()
            cluster.close()
        times[f"grid {n} worker(s)"] = wall
        task_log[n] = (events, wall, res)
        busy = sum(e["seconds"] or 0.0 for e in events)
        cpu = sum(r.get("cpu_seconds", 0.0) for r in res.task_results)
        print(f"grid, {n} worker(s): {wall:.1f} s (+{start:.1f} s cluster start), {len(events)} tasks, "
              f"{len(res.failed)} failed, workers busy {100 * busy / (n * wall):.0f} % of the wall time, "
              f"{cpu / wall:.2f} cores obtained by the shard tasks (CPU s / wall s; load {load()})")

    # 3. figures
    print()
    seq1 = times.get("sequential 1 thread(s)")
    g = {n: times[f"grid {n} worker(s)"] for n in task_log}
    if 1 in g and 2 in g:
        print(f"speedup of 2 workers over 1: {g[1] / g[2]:.2f}x")
    if 2 in g:
        print(f"speedup of 2 workers over the sequential run: {seq1 / g[2]:.2f}x (1 thread), "
              f"{times[f'sequential {default_threads} thread(s)'] / g[2]:.2f}x ({default_threads} threads)")
    print(f"scheduler round trip per no-op task: {1000 * overhead_noop:.2f} ms")
    for n, (events, wall, res) in task_log.items():
        busy = sum(e["seconds"] or 0.0 for e in events)
        shards = [e for e in events if "clips" in e["task"]]
        per = (n * wall - busy) / max(len(events), 1)
        mean_task = statistics.mean(e["seconds"] for e in shards)
        assembly = [c.get("assembly_seconds", 0.0) for c in res.cells.values()]
        print(f"{n} worker(s): worker time not inside a task: {per:.2f} s per task ({100 * per / mean_task:.1f} % of "
              f"the mean shard task, {mean_task:.1f} s): driver planning, assembly ({statistics.mean(assembly):.2f} s "
              f"per run folder), idle tail")
    events, _, res = task_log[min(task_log)]
    details = [r for r in res.task_results if "overhead_seconds" in r]
    if details:
        fixed = statistics.median(r["overhead_seconds"] for r in details) + overhead_noop
        setup = [r["setup_seconds"] for r in details if r["setup_seconds"] > 0.05]
        per_clip = statistics.median((r["seconds"] - r["setup_seconds"] - r["overhead_seconds"]) / r["clips"]
                                     for r in details)
        print(f"fixed cost per shard task: {1000 * fixed:.0f} ms (inputs digest, shard writes and commit, scheduler "
              f"round trip); context set-up, once per worker and cell: {statistics.mean(setup) if setup else 0:.1f} s; "
              f"compute {per_clip:.2f} s per clip and method (median)")
        print("  shard size  fixed cost / task time")
        for size in (args.chunk, 2 * args.chunk, 4 * args.chunk, 8 * args.chunk):
            print(f"  {size:>10}  {100 * fixed / (fixed + per_clip * size):5.2f} %")
    by_method: dict = {}
    for e in events:
        if "clips" in e["task"]:
            method = e["task"].split("/")[1].split("_")[0]
            by_method.setdefault(method, []).append(e["seconds"])
    print("shard tasks on 1 worker (seconds: median, max; per clip):")
    for m, secs in by_method.items():
        print(f"  {m:<9} {statistics.median(secs):6.1f} {max(secs):6.1f}   {statistics.median(secs) / args.shard:.2f} s/clip")
    ref = csv_bytes(root / "sequential-1t")
    for n in task_log:
        same = csv_bytes(root / f"grid-{n}w") == ref
        print(f"grid ({n} worker(s)) CSVs and maps byte-identical to the 1-thread sequential run: {same}")
    if default_threads != 1:
        d = drift(root / "sequential-1t", root / f"sequential-{default_threads}t")
        print(f"1 vs {default_threads} torch threads: {d['rows_differing']} of {d['rows']} rows differ; pred flips "
              f"{d['pred_flips']}, FidIn flips {d['FidIn_flips']}, AI flips {d['AI_flips']}; largest |difference|: "
              + ", ".join(f"{k} {v:.3g}" for k, v in d["max_abs"].items()))

    # 4. the model-pass limit
    print()
    ckpt = cells[0].partition(":")[0]
    fwd, fwd_bwd, scorer, fcfg = model_flops(ckpt)
    peak1, peak_all = matmul_peak(1), matmul_peak(default_threads)
    n_masks = 14
    per_input = bare_pass_seconds(scorer, fcfg, 2 * n_masks * args.chunk, 1)
    print(f"classifier ({Path(ckpt).name}): {fwd / 1e9:.3f} GFLOP per clip forward, {fwd_bwd / 1e9:.3f} forward+backward")
    print(f"matmul peak: {peak1:.1f} GFLOP/s at 1 thread, {peak_all:.1f} at {default_threads}")
    print(f"bare scoring passes at 1 thread: {1000 * per_input:.2f} ms per input = {fwd / per_input / 1e9:.1f} GFLOP/s "
          f"({100 * fwd / per_input / 1e9 / peak1:.0f} % of the matmul peak)")
    info_dir = root / "grid-1w" if (root / "grid-1w").is_dir() else root / "sequential-1t"
    for rj in sorted(info_dir.rglob("run.json")):
        info = json.loads(rj.read_text())
        t = info["timings"]
        clips = t["clips_computed"]
        passes = clips * 2 * len(info["key"]["domains"]) * len(info["key"]["masks"])
        scoring = t["mask_forward_seconds"] + t["audio_domain_seconds"]
        bare = passes * per_input
        if info["method"] == "shap":
            bare += clips * info["key"]["shap_nsamples"] * per_input * fwd_bwd / fwd
        elif info["method"] in ("saliency", "gradcam"):
            bare += clips * per_input * fwd_bwd / fwd
        print(f"  {rj.parent.name:<16} scoring passes {passes * fwd / scoring / 1e9:5.1f} GFLOP/s achieved; pipeline "
              f"{t['seconds']:.0f} s = {t['seconds'] / bare:.1f}x its bare model passes ({bare:.0f} s)")

    # 5. projection of the full grid from its run.json timings, scaled to a 1-thread worker
    runs = sorted(Path(args.full_grid_results).glob("*/*/run.json"))
    if not runs:
        return
    ratio = []
    seq_dir = root / f"sequential-{default_threads}t"
    for rj in sorted((root / "grid-1w").rglob("run.json")):
        a = json.loads(rj.read_text())["timings"]["seconds"]
        b = json.loads((seq_dir / rj.relative_to(root / "grid-1w")).read_text())["timings"]["seconds"]
        ratio.append(a / b)
    scale = statistics.mean(ratio)
    work, longest, n_tasks = 0.0, 0.0, 0
    for rj in runs:
        info = json.loads(rj.read_text())
        hist = info.get("history", [])
        sec = sum(h.get("seconds", 0) for h in hist) * scale
        clips = info.get("n_clips_done") or 400
        per_task = sec / clips * args.shard
        work += sec
        longest = max(longest, per_task)
        n_tasks += -(-clips // args.shard)
    ev, wall, _ = task_log[min(task_log)]
    per_task_overhead = (min(task_log) * wall - sum(e["seconds"] or 0 for e in ev)) / len(ev)
    print()
    print(f"full grid ({len(runs)} run folders, {n_tasks} tasks of {args.shard} clips): {work / 60:.0f} min of "
          f"1-thread worker time (the run.json seconds x {scale:.2f}, this machine's 1-worker/"
          f"{default_threads}-thread ratio); longest task {longest:.0f} s")
    print("  N workers   projected minutes (max(work/N, longest task) + overhead per task x tasks / N)")
    for n in (1, 2, 4, 8, 16, 32, 64):
        t = max(work / n, longest) + per_task_overhead * n_tasks / n
        print(f"  {n:>9}   {t / 60:8.1f}")
    print(f"results under {root}")


if __name__ == "__main__":
    main()
