"""Benchmark the change detectors on one core: megapixels per second per detector.

Uses the 1024 x 1024 WHU pair of ``../shared/data/changes`` (or ``$GRIDMAP_SHARED_DATA``) tiled up to
``--size`` pixels a side, so the figure is for a realistic aerial scene, not noise. Each detector runs
``--repeat`` times on the pair and the best time is kept (the machine is shared; the best run is the one
least disturbed by others). Co-registration is included in every detector that does it.

    python bench/bench_change.py [--size 2048] [--repeat 3]
"""

from __future__ import annotations

import os

# Numeric libraries to one thread before they are imported: the figure is per core.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import inspection.learned  # noqa: E402,F401  (registers learned and learned-aligned)
from inspection.change import DETECTORS, read_rgb  # noqa: E402

cv2.setNumThreads(1)

TARGET_MP_S = 20.0


def load_pair(size: int) -> tuple[np.ndarray, np.ndarray]:
    root = Path(os.environ.get("GRIDMAP_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    folder = root / "changes" / "whu-1024"
    before, after = read_rgb(folder / "A" / "000121.png"), read_rgb(folder / "B" / "000121.png")
    reps = -(-size // before.shape[0])
    # Mirror-tile rather than repeat, so the tiled scene has no seams that look like edges.
    tile = lambda im: np.block([[[im if (i + j) % 2 == 0 else im[:, ::-1]] for j in range(reps)] for i in range(reps)])  # noqa: E731
    return tile(before)[:size, :size].copy(), tile(after)[:size, :size].copy()


def main() -> int:
    if hasattr(os, "sched_setaffinity"):  # the figure is per core (in main: importers keep their cores)
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    before, after = load_pair(args.size)
    megapixels = before.shape[0] * before.shape[1] / 1e6
    print(f"pair {before.shape[1]} x {before.shape[0]} ({megapixels:.2f} MP), 1 thread, best of {args.repeat}")
    seen = {}
    for name, detector in DETECTORS.items():
        if id(detector) in seen:
            print(f"{name:22s} = {seen[id(detector)]}")
            continue
        seen[id(detector)] = name
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            detector.detect(before, after)
            best = min(best, time.perf_counter() - start)
        rate = megapixels / best
        flag = "ok" if rate >= TARGET_MP_S else f"below {TARGET_MP_S:.0f}"
        print(f"{name:22s} {best * 1000:8.1f} ms  {rate:6.1f} MP/s per core  ({flag})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
