"""Field-report submission against PostGIS: sustained reports per second, p50/p99 latency, nothing lost or
duplicated, and the service's overhead over a bare FastAPI endpoint doing the same insert.

Both servers run under uvicorn (``--workers`` processes) on loopback; one load-generator process keeps
``--concurrency`` requests in flight for ``--seconds``. Each request is a multipart report with a 200 KB
JPEG photo (with EXIF GPS), at a random point of a random grid of the demo street, sent by that grid's
worker. Afterwards the database is counted: every 2xx must be exactly one stored report, with no
client_id twice.

The bare endpoint (``bare_app`` below) parses the same multipart body, hashes and writes the photo, and
inserts one row with psycopg2 from a pool: what any report endpoint must do at the least. The ratio says
what authentication, validation, EXIF checks, location, nearby-case search, the audit log and dispatch
cost on top.

    python bench/bench_reports.py [--seconds 20] [--concurrency 16] [--workers 2] [--admin-url postgresql://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHOTO_BYTES = 200 * 1024
TARGET_RATE = 200.0
TARGET_P99_MS = 200.0


def photo_with_gps(lon: float, lat: float) -> bytes:
    """A ~200 KB, 1600 x 1200 JPEG with EXIF GPS and time, like a phone's: a real drone frame from
    ../shared/data scaled down (random pixels where that is absent, which compress far worse)."""
    import io

    import numpy as np
    from PIL import Image

    frames = sorted((REPO.parent / "shared" / "data" / "drone" / "odm-toledo-2015").glob("*.JPG"))
    if frames:
        image = Image.open(frames[0]).convert("RGB").resize((1600, 1200))
    else:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8))
    exif = Image.Exif()
    gps = {1: "N", 2: _dms(lat), 3: "E", 4: _dms(lon)}
    exif[0x8825] = gps
    exif[0x0132] = datetime.now().strftime("%Y:%m:%d %H:%M:%S")
    for quality in range(95, 20, -5):
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, exif=exif)
        if out.tell() <= PHOTO_BYTES:
            return out.getvalue()
    return out.getvalue()


def _dms(value: float):
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round(((value - degrees) * 60 - minutes) * 60, 4)
    return (degrees, minutes, seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_database(admin_url: str, name: str) -> str:
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def wait_ready(port: int, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not come up")


#: wrk's summary as one line the benchmarks parse (requests, microseconds, non-2xx, socket errors, p50/p99 ms).
WRK_DONE = r"""
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %.3f %.3f\n", summary.requests, summary.duration,
    summary.errors.status, summary.errors.timeout + summary.errors.connect + summary.errors.read + summary.errors.write,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""
LUA = r"""
local photo = io.open("{photo}", "rb"):read("*a")
local tokens = {{{tokens}}}
local lons = {{{lons}}}
local lats = {{{lats}}}
local categories = {{"event:0502", "event:0101", "event:0102", "event:0504", "event:0601"}}
local boundary = "gridmapbenchboundary"
local mode = "{mode}"
local threads, counter, tid = 0, 0, 0
setup = function(thread) thread:set("tid", threads); threads = threads + 1 end
init = function() math.randomseed(tid + 1) end
local function part(name, value, filename)
  local head = "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"" .. name .. "\""
  if filename then head = head .. "; filename=\"" .. filename .. "\"\r\nContent-Type: image/jpeg" end
  return head .. "\r\n\r\n" .. value .. "\r\n"
end
request = function()
  counter = counter + 1
  local i = math.random(#lons)
  local id = string.format("{prefix}%02d%09d", tid, counter)
  local fields, headers
  if mode == "gridmap" then
    fields = part("report", string.format('{{"client_id":"%s","category":"%s","lon":%.7f,"lat":%.7f,' ..
      '"accuracy_m":8,"observed_at":"{now}","note":"bench"}}', id, categories[math.random(#categories)],
      lons[i], lats[i]))
    headers = {{["Authorization"] = "Bearer " .. tokens[i]}}
  else
    fields = part("client_id", id) .. part("lon", string.format("%.7f", lons[i])) .. part("lat", string.format("%.7f", lats[i]))
    headers = {{}}
  end
  headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
  local body = fields .. part("photos", photo, "p.jpg") .. "--" .. boundary .. "--\r\n"
  return wrk.format("POST", "/reports", headers, body)
end
"""


def load(port: int, script: Path, seconds: float, connections: int) -> dict:
    """Run wrk (one thread: the other core is the server's) and parse what the script's done() prints."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT"))
    requests, micros, bad_status, socket_errors, p50, p99 = line.split()[1:]
    ok = int(requests) - int(bad_status)
    return {"requests": int(requests), "ok": ok, "bad_status": int(bad_status), "socket_errors": int(socket_errors),
            "rate": ok / (int(micros) / 1e6), "p50_ms": float(p50), "p99_ms": float(p99)}


def write_script(path: Path, *, mode: str, prefix: str, photo: Path, points, tokens) -> Path:
    from datetime import datetime

    path.write_text(LUA.format(
        photo=photo, mode=mode, prefix=prefix, now=datetime.now(timezone.utc).isoformat(),
        tokens=", ".join(f'"{tokens.get(u, "")}"' for u, _ in points),
        lons=", ".join(f"{p.x:.7f}" for _, p in points), lats=", ".join(f"{p.y:.7f}" for _, p in points)) + WRK_DONE)
    return path


def serve(module_app: str, port: int, workers: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "uvicorn", module_app, "--factory", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers), "--log-level", "warning",
                             "--no-access-log"], env=env, cwd=REPO, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1/postgres")
    args = parser.parse_args()

    import psycopg2

    from api.demo import DEMO_PASSWORD

    url = make_database(args.admin_url, "gridmap_bench_reports")
    bare_url = make_database(args.admin_url, "gridmap_bench_bare")
    data_dir = Path(f"/tmp/gridmap-bench-reports-{os.getpid()}")
    env = {**os.environ, "GRIDMAP_DATABASE_URL": url, "GRIDMAP_DATA_DIR": str(data_dir),
           "GRIDMAP_BARE_URL": bare_url, "GRIDMAP_BARE_DIR": str(data_dir / "bare"), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "api.cli", "demo", "--dir", str(data_dir / "boundaries")], env=env,
                   check=True, stdout=subprocess.DEVNULL)

    from api.demo import grid_username
    from storage import open_store

    with open_store(url) as store:
        grids = store.get_units("grid")
        first = grids["code"].min()
        points = [(grid_username(code, first), geom.representative_point()) for code, geom in
                  zip(grids["code"], grids.geometry)]
    photo = photo_with_gps(points[0][1].x, points[0][1].y)
    print(f"photo: {len(photo):,} bytes; {len(points)} grids, {args.concurrency} in flight, {args.workers} "
          f"server processes, {args.seconds:g} s per run")

    photo_path = data_dir / "photo.jpg"
    photo_path.write_bytes(photo)
    results = {}
    port = free_port()
    server = serve("api.app:create_app", port, args.workers, env)
    try:
        wait_ready(port)
        import httpx

        tokens = {username: httpx.post(f"http://127.0.0.1:{port}/auth/token",
                                       json={"username": username, "password": DEMO_PASSWORD}).json()["access_token"]
                  for username, _ in points}
        warm = write_script(data_dir / "warm.lua", mode="gridmap", prefix="warm", photo=photo_path, points=points,
                            tokens=tokens)
        load(port, warm, 3, args.concurrency)
        script = write_script(data_dir / "ours.lua", mode="gridmap", prefix="bench", photo=photo_path,
                              points=points, tokens=tokens)
        results["gridmap"] = load(port, script, args.seconds, args.concurrency)
    finally:
        stop(server)
    with open_store(url) as store:
        ids = [r["client_id"] for r in store.list_reports() if r["client_id"].startswith("bench")]

    port = free_port()
    server = serve("bench.bare_reports:bare_app", port, args.workers, env)
    try:
        wait_ready(port)
        load(port, write_script(data_dir / "bare-warm.lua", mode="bare", prefix="warm", photo=photo_path,
                                points=points, tokens={}), 3, args.concurrency)
        script = write_script(data_dir / "bare.lua", mode="bare", prefix="bench", photo=photo_path, points=points,
                              tokens={})
        results["bare"] = load(port, script, args.seconds, args.concurrency)
    finally:
        stop(server)
    conn = psycopg2.connect(bare_url)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT client_id) FROM bare_reports WHERE client_id LIKE 'bench%'")
        bare_rows, bare_distinct = cur.fetchone()
    conn.close()

    g, b = results["gridmap"], results["bare"]
    # wrk stops counting at the deadline with up to --concurrency requests still in flight; those may be stored
    # without being acknowledged, never the other way round.
    lost = max(0, g["ok"] - len(set(ids)))
    print(f"gridmap POST /reports: {g['rate']:.0f} reports/s, p50 {g['p50_ms']:.0f} ms, p99 {g['p99_ms']:.0f} ms; "
          f"{g['ok']} acknowledged, {g['bad_status']} refused, {g['socket_errors']} socket errors; stored "
          f"{len(ids)} ({len(ids) - len(set(ids))} duplicated, {lost} lost, "
          f"{len(set(ids)) - g['ok']} in flight at the end)")
    print(f"bare FastAPI insert:   {b['rate']:.0f} reports/s, p50 {b['p50_ms']:.0f} ms, p99 {b['p99_ms']:.0f} ms "
          f"({bare_rows} rows, {bare_distinct} distinct)")
    print(f"throughput ratio gridmap/bare: {g['rate'] / b['rate']:.2f}; latency p50 ratio "
          f"{g['p50_ms'] / b['p50_ms']:.2f}; target >= {TARGET_RATE:.0f}/s and p99 < {TARGET_P99_MS:.0f} ms: "
          f"{'met' if g['rate'] >= TARGET_RATE and g['p99_ms'] < TARGET_P99_MS and not lost else 'NOT met'}")


if __name__ == "__main__":
    main()
