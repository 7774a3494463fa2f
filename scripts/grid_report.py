"""Print the time per task, per run folder and per cell of the experiment grid, from the
run.json files under results/ (:func:`audiointerp.grid.timing_report`).

Usage: python scripts/grid_report.py [--results results]

Per run folder: clips, tasks (shards), worker seconds summed over every session that computed
them, seconds per task and per clip, the wall seconds of its last grid session and the model's
accuracy under the condition, and how a clip's worker time splits into the attribution maps, the
masks with their spectrogram-domain forward passes, and the audio domain (s/clip). Per cell: worker
minutes, wall minutes and the speedup the Dask workers gave (worker over wall time), shown when the
whole cell ran in one grid session, and the CPU model(s) its folders were assembled on.
"""

from __future__ import annotations

import argparse
import sys

from audiointerp.errors import AudioInterpError
from audiointerp.grid import timing_report


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def main() -> None:
    """Print the grid's timing report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    args = ap.parse_args()
    try:
        folders, cells = timing_report(args.results)
    except AudioInterpError as e:
        sys.exit(f"grid_report: error: {e}")
    print(f"{'model':<14} {'condition':<10} {'method':<10} {'clips':>5} {'tasks':>5} {'worker s':>8} "
          f"{'s/task':>7} {'s/clip':>6} {'attr':>6} {'masks':>6} {'audio':>6} {'wall s':>7} {'accuracy':>8}")
    for r in folders:
        print(f"{r['model']:<14} {r['condition']:<10} {r['method']:<10} {r['clips']:>5} {r['shards']:>5} "
              f"{r['worker_seconds']:>8.0f} {_num(r['seconds_per_task'], '7.1f'):>7} "
              f"{_num(r['seconds_per_clip'], '6.2f'):>6} {_num(r['attribution_per_clip'], '6.2f'):>6} "
              f"{_num(r['masks_per_clip'], '6.2f'):>6} {_num(r['audio_per_clip'], '6.2f'):>6} "
              f"{_num(r['wall_seconds'], '7.0f'):>7} "
              f"{_num(r['accuracy'], '8.4f'):>8}")
    print()
    for c in cells:
        wall = f", {c['pending_shards']} shards of unfinished folders" if c["pending_shards"] else ""
        if c["wall_seconds"] is not None:
            wall = f", wall {c['wall_seconds'] / 60:.1f} min, speedup {c['speedup']:.2f}x"
        cpu = " / ".join(c["cpus"]) or "CPU not recorded"
        print(f"cell {c['model']} x {c['condition']}: {c['folders']} run folders, "
              f"worker {c['worker_seconds'] / 60:.1f} min{wall}; {cpu}")
    total = sum(c["worker_seconds"] for c in cells)
    print(f"grid total: worker {total / 60:.1f} min")


if __name__ == "__main__":
    main()
