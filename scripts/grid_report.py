"""Print the time per cell of the experiment grid, from the run.json files under results/.

Usage: python scripts/grid_report.py [--results results]

For each (model, condition) cell and method: clips done, wall seconds summed over every
session that worked on the run (a resumed run has several), clips per second, and the
model's accuracy under the condition; then the cell totals and the grand total in minutes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    """Print the time per grid cell and method from the run.json files."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    args = ap.parse_args()
    runs = sorted(Path(args.results).glob("*/*/run.json"))
    if not runs:
        raise SystemExit(f"no run.json under {args.results}")
    cells: dict = {}
    print(f"{'model':<14} {'condition':<12} {'method':<9} {'clips':>5} {'seconds':>8} {'clips/s':>7} "
          f"{'attr s':>7} {'spec s':>7} {'audio s':>7} {'accuracy':>8}")
    for path in runs:
        info = json.loads(path.read_text())
        hist = info.get("history", [])
        sec = sum(h.get("seconds", 0) for h in hist)
        parts = [sum(h.get(k, 0) or 0 for h in hist) for k in ("attribution_seconds", "mask_forward_seconds",
                                                                "audio_domain_seconds")]
        n = info.get("n_clips_done", 0)
        cond = info.get("condition", path.parent.name.partition("_")[2])
        acc = next(iter(info.get("accuracy", {}).values()), float("nan"))
        key = (info.get("model", path.parent.parent.name), cond)
        cells.setdefault(key, []).append(sec + (hist[0].get("features_seconds", 0) if hist else 0))
        print(f"{key[0]:<14} {cond:<12} {info.get('method', '?'):<9} {n:>5} {sec:>8.0f} "
              f"{(n / sec if sec else float('nan')):>7.2f} {parts[0]:>7.0f} {parts[1]:>7.0f} {parts[2]:>7.0f} {acc:>8.4f}")
    print()
    total = 0.0
    for (model, cond), secs in cells.items():
        total += sum(secs)
        print(f"cell {model} x {cond}: {sum(secs) / 60:.1f} min")
    print(f"grid total: {total / 60:.1f} min")


if __name__ == "__main__":
    main()
