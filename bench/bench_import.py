"""Import plus validation of the 343 real Beijing street units: must take under 5 seconds.

Times the whole user-visible path: read the 16 GeoJSON files, normalise codes and CRS, store them in a
fresh store (the embedded SQLite one unless --database-url names another), read them back and validate.
Prints the best of --repeat runs and each stage's share.

    python bench/bench_import.py [--repeat 3] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gridmap.io import read_units  # noqa: E402
from gridmap.validate import validate_units  # noqa: E402
from storage import open_store  # noqa: E402

BUDGET_SECONDS = 5.0


def run_once(source: Path, url: str) -> dict[str, float]:
    times = {}
    start = time.perf_counter()
    units = read_units(source, "street").units
    times["read"] = time.perf_counter() - start
    with open_store(url) as store:
        store.delete_units(units["code"])
        mark = time.perf_counter()
        store.put_units(units)
        stored = store.get_units("street")
        times["store"] = time.perf_counter() - mark
    mark = time.perf_counter()
    findings = validate_units(stored)
    times["validate"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - start
    times["findings"] = len(findings)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    shared = Path(os.environ.get("GRIDMAP_SHARED_DATA", REPO.parent / "shared" / "data"))
    source = shared / "boundaries" / "beijing-subdistricts"
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        runs = [run_once(source, url) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["total"])
    stages = ", ".join(f"{k} {best[k]:.2f} s" for k in ("read", "store", "validate"))
    print(f"backend: {url.split(':')[0]}; {int(best['findings'])} findings; {stages}")
    verdict = "ok" if best["total"] < BUDGET_SECONDS else "TOO SLOW"
    print(f"import+validate 343 Beijing units: {best['total']:.2f} s (best of {args.repeat}; budget {BUDGET_SECONDS:.0f} s): {verdict}")
    return 0 if best["total"] < BUDGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
