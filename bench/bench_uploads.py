"""Drone batch upload: 500 photos of 5 MB through the chunked upload API, against a plain file copy of the same
bytes on the same disk; the server's peak memory shows the files are streamed, not held.

The server (``gridmap serve``, embedded store) runs in its own process; the client sends each file in
8 MiB chunks with a per-chunk SHA-256, four files at a time, as a drone contractor's uploader would.
Peak memory is the server process's VmHWM from /proc.

    python bench/bench_uploads.py [--files 500] [--mb 5] [--parallel 4]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_reports import free_port, serve, stop, wait_ready  # noqa: E402

CHUNK = 8 * 1024 * 1024


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--mb", type=float, default=5.0)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    import httpx

    work = Path(tempfile.mkdtemp(prefix="gridmap-bench-uploads-"))
    try:
        source = work / "source"
        source.mkdir()
        size = int(args.mb * 1024 * 1024)
        manifest = []
        for i in range(args.files):
            data = os.urandom(size)  # incompressible, distinct: no file is deduplicated
            path = source / f"DJI_{i:04d}.jpg"
            path.write_bytes(data)
            manifest.append({"name": path.name, "size": size, "sha256": hashlib.sha256(data).hexdigest()})
        total_mb = size * args.files / 1024**2

        os.sync()
        started = time.perf_counter()
        copied = work / "copy"
        copied.mkdir()
        for entry in manifest:
            shutil.copyfile(source / entry["name"], copied / entry["name"])
        os.sync()
        copy_seconds = time.perf_counter() - started
        shutil.rmtree(copied)

        env = {**os.environ, "GRIDMAP_DATABASE_URL": f"sqlite:///{work / 'gridmap.db'}",
               "GRIDMAP_DATA_DIR": str(work / "data"), "GRIDMAP_INPROCESS_WORKER": "0"}
        subprocess.run([sys.executable, "-m", "api.cli", "demo", "--dir", str(work / "boundaries")], env=env,
                       check=True, stdout=subprocess.DEVNULL, cwd=REPO)
        port = free_port()
        server = serve("api.app:create_app", port, 1, env)  # one process: its VmHWM is the server's
        try:
            wait_ready(port)
            base = f"http://127.0.0.1:{port}"
            token = httpx.post(f"{base}/auth/token", json={"username": "pipeline", "password": "gridmap-demo"}
                               ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            idle_mb = vm_hwm_mb(server.pid)
            started = time.perf_counter()
            reply = httpx.post(f"{base}/uploads", json={"batch_id": "bench-batch-0001", "files": manifest},
                               headers=headers, timeout=60)
            reply.raise_for_status()

            def send(entry: dict) -> None:
                with httpx.Client(base_url=base, headers=headers, timeout=120) as client, \
                        open(source / entry["name"], "rb") as f:
                    offset = 0
                    while chunk := f.read(CHUNK):
                        answer = client.patch(f"/uploads/bench-batch-0001/files/{entry['name']}", content=chunk,
                                              headers={"Upload-Offset": str(offset), "Upload-Checksum":
                                                       f"sha256 {hashlib.sha256(chunk).hexdigest()}"})
                        answer.raise_for_status()
                        offset += len(chunk)

            with ThreadPoolExecutor(args.parallel) as pool:
                list(pool.map(send, manifest))
            job = httpx.post(f"{base}/uploads/bench-batch-0001/complete", headers=headers, timeout=60)
            job.raise_for_status()
            upload_seconds = time.perf_counter() - started
            peak_mb = vm_hwm_mb(server.pid)
        finally:
            stop(server)
        print(f"{args.files} files x {args.mb:g} MB = {total_mb:,.0f} MB")
        print(f"plain file copy:  {copy_seconds:6.1f} s  {total_mb / copy_seconds:7.0f} MB/s")
        print(f"chunked upload:   {upload_seconds:6.1f} s  {total_mb / upload_seconds:7.0f} MB/s "
              f"(ratio to the copy {copy_seconds / upload_seconds:.2f}); job {job.json()['state']}")
        print(f"server peak memory (VmHWM): {peak_mb:.0f} MB, {peak_mb - idle_mb:+.0f} MB over idle, "
              f"for {total_mb:,.0f} MB received")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
