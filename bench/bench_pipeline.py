"""Benchmark the change pipeline: speed against plain JPEG decoding, Dask scaling, memory on a huge mosaic.

1. A real-size pair (default 4096 x 4096 px at 0.15 m, JPEG-compressed COGs of the demo street from
   :mod:`inspection.synthetic`) goes through :func:`inspection.pipeline.run_pipeline` on a local cluster of
   one worker process; in the same run, ``cv2.imdecode`` (one thread) decodes the same two images'
   pixels encoded as JPEG. Target: pipeline speed >= 1/3 of decode speed per core.
2. The same pair on two workers: target near-linear speed-up. (The machine has two cores; anything else
   running on it shows up here.)
3. A pair of ``--mosaic`` x ``--mosaic`` px mosaics (default 20,000, written block by block by
   :func:`inspection.ortho.write_large_synthetic_mosaic`) on two workers: peak RSS of each worker process
   (``getrusage``), against the same figure on the 4096 px pair: memory follows the tile, not the mosaic.

    python bench/bench_pipeline.py [--size 4096] [--mosaic 20000] [--tile 1024] [--dir /tmp/bench-pipeline]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rasterio


def worker_peak_mb() -> float:
    """Peak resident memory of the calling process's own address space, MB.

    Not ``ru_maxrss``: it survives exec, so a spawned worker would report its parent's high-water mark.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def decode_rate(paths: list[Path], repeats: int = 3) -> tuple[float, float]:
    """(seconds, MP/s) for cv2.imdecode of the images' pixels, re-encoded as JPEG (quality 90), one thread."""
    cv2.setNumThreads(1)
    blobs, pixels = [], 0
    for path in paths:
        with rasterio.open(path) as src:
            rgb = np.moveaxis(src.read(indexes=[1, 2, 3]), 0, -1)
        pixels += rgb.shape[0] * rgb.shape[1]
        ok, blob = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        blobs.append(blob)
        del rgb
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for blob in blobs:
            cv2.imdecode(blob, cv2.IMREAD_COLOR)
        best = min(best, time.perf_counter() - start)
    return best, pixels / 1e6 / best


def timed_run(before: Path, after: Path, workdir: Path, n_workers: int, tile: int, **kwargs) -> tuple[float, list[float], int]:
    """Seconds for one fresh pipeline run on a new cluster (startup excluded), worker peak RSS (MB), candidates."""
    from distributed import Client, LocalCluster

    from inspection.pipeline import run_pipeline

    shutil.rmtree(workdir, ignore_errors=True)
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.run(lambda: None)
            start = time.perf_counter()
            found = run_pipeline(before, after, workdir=workdir, client=client, tile_size=tile, **kwargs)
            seconds = time.perf_counter() - start
            peaks = sorted(client.run(worker_peak_mb).values())
    return seconds, peaks, len(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--mosaic", type=int, default=20000)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--detector", default="default")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-pipeline"))
    args = parser.parse_args(argv)
    from inspection.ortho import write_large_synthetic_mosaic
    from inspection.synthetic import survey_pair

    args.dir.mkdir(parents=True, exist_ok=True)
    resolution = 0.15
    pair_dir = args.dir / f"pair-{args.size}"
    if not (pair_dir / "after.tif").exists():
        start = time.perf_counter()
        survey_pair(pair_dir, seed=1, size_m=args.size * resolution, resolution=resolution, sheds=40, rooftops=12,
                    compress="jpeg")
        print(f"wrote {args.size} px pair in {time.perf_counter() - start:.0f} s", flush=True)
    before, after = pair_dir / "before.tif", pair_dir / "after.tif"
    mp = args.size * args.size / 1e6

    decode_s, decode_rate_mp = decode_rate([before, after])
    print(f"cv2.imdecode of both images ({2 * mp:.1f} MP): {decode_s:.2f} s, {decode_rate_mp:.0f} MP/s", flush=True)
    one_s, one_peaks, count = timed_run(before, after, args.dir / "work-1", 1, args.tile, detector=args.detector)
    print(f"pipeline, 1 worker: {one_s:.2f} s, {2 * mp / one_s:.1f} MP/s (image pixels), {count} candidates, "
          f"worker peak {one_peaks[0]:.0f} MB", flush=True)
    two_s, two_peaks, _ = timed_run(before, after, args.dir / "work-2", 2, args.tile, detector=args.detector)
    print(f"pipeline, 2 workers: {two_s:.2f} s, speed-up {one_s / two_s:.2f}x, worker peaks {two_peaks} MB", flush=True)

    big = args.dir / f"mosaic-{args.mosaic}"
    big.mkdir(exist_ok=True)
    for name in ("before", "after"):
        if not (big / f"{name}.tif").exists():
            start = time.perf_counter()
            write_large_synthetic_mosaic(big / f"{name}.tif", size=args.mosaic)
            print(f"wrote {args.mosaic} px mosaic {name} in {time.perf_counter() - start:.0f} s", flush=True)
    big_mp = args.mosaic * args.mosaic / 1e6
    big_runs = {}
    for workers in (1, 2):  # scaling where tiles, not the serial stages, dominate
        big_runs[workers] = timed_run(big / "before.tif", big / "after.tif", args.dir / f"work-big-{workers}", workers,
                                      args.tile, detector=args.detector)
        print(f"pipeline on {args.mosaic} x {args.mosaic} pair ({2 * big_mp:.0f} MP), {workers} worker(s): "
              f"{big_runs[workers][0]:.1f} s, worker peaks {big_runs[workers][1]} MB", flush=True)
    big_peaks = big_runs[1][1] + big_runs[2][1]

    print("\nsummary")
    print(f"  decode (cv2.imdecode, 1 thread)   {decode_rate_mp:8.1f} MP/s")
    print(f"  pipeline, 1 worker                {2 * mp / one_s:8.1f} MP/s   ratio {decode_s / one_s:.2f} (target >= 0.33)")
    print(f"  pipeline, 2 workers               {2 * mp / two_s:8.1f} MP/s   speed-up {one_s / two_s:.2f}x")
    print(f"  {args.mosaic} px pair, 1 -> 2 workers    {big_runs[1][0] / big_runs[2][0]:8.2f}x   "
          f"({2 * big_mp / big_runs[2][0]:.1f} MP/s with 2)")
    print(f"  worker peak RSS, {args.size} px pair     {max(one_peaks + two_peaks):8.0f} MB")
    print(f"  worker peak RSS, {args.mosaic} px pair   {max(big_peaks):8.0f} MB   ({2 * big_mp * 3:.0f} MB of raw pixels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
