"""The grid worker's phone page on first load: JavaScript and CSS bytes transferred, and time until it is
interactive with the CPU throttled 4x (Chromium's DevTools throttling, as a mid-range phone).

A demo store is made in a temporary directory (``gridmap demo``) and served by one uvicorn process on
loopback. Each run opens a fresh browser context (empty HTTP cache, no service worker), already logged in as
``worker`` (the token put in localStorage before the page loads), and records:

* bytes on the wire (``encodedDataLength``, after gzip) of every script and stylesheet response;
* the time from navigation start until the page sets ``window.gridmapReadyAt``: the map drawn with the
  worker's grids, the cases listed and the report button live.

Targets (issue 5): under 300 KB of JS + CSS, interactive in under 2 s.

    python bench/bench_pages.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_reports import free_port, serve, stop, wait_ready  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True,
         "locale": "zh-CN"}


def first_load(browser, base: str, token: str, where: dict) -> tuple[int, float]:
    context = browser.new_context(**PHONE, geolocation=where, permissions=["geolocation"])
    context.add_init_script(f"localStorage.setItem('gridmap.token', {token!r});")
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": 4})
    kinds: dict[str, str] = {}
    sizes: dict[str, int] = {}
    cdp.on("Network.responseReceived", lambda e: kinds.__setitem__(e["requestId"], e["type"]))
    cdp.on("Network.loadingFinished", lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])))
    page.goto(f"{base}/m/")
    page.wait_for_function("window.gridmapReadyAt !== undefined", timeout=60_000)
    ready_ms = page.evaluate("window.gridmapReadyAt")
    code_bytes = sum(n for rid, n in sizes.items() if kinds.get(rid) in ("Script", "Stylesheet"))
    context.close()
    return code_bytes, ready_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import httpx
    from playwright.sync_api import sync_playwright

    from api.demo import DEMO_PASSWORD

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GRIDMAP_DATABASE_URL": f"sqlite:///{tmp}/demo.db", "GRIDMAP_DATA_DIR": f"{tmp}/data"}
        subprocess.run([sys.executable, "-m", "api.cli", "demo"], env=env, cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        port = free_port()
        server = serve("api.app:create_app", port, 1, env)
        try:
            wait_ready(port)
            base = f"http://127.0.0.1:{port}"
            token = httpx.post(f"{base}/auth/token", json={"username": "worker", "password": DEMO_PASSWORD}).json()
            cases = httpx.get(f"{base}/cases", params={"mine": "true"},
                              headers={"Authorization": f"Bearer {token['access_token']}"}).json()["cases"]
            where = {"longitude": cases[0]["lon"], "latitude": cases[0]["lat"], "accuracy": 10} if cases else \
                {"longitude": 120.1785, "latitude": 30.2572, "accuracy": 10}
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                first_load(browser, base, token["access_token"], where)  # warm the server, not the browser
                runs = [first_load(browser, base, token["access_token"], where) for _ in range(args.runs)]
                browser.close()
        finally:
            stop(server)
    code = max(n for n, _ in runs)
    ready = [ms for _, ms in runs]
    print(f"phone page, first load, {args.runs} runs, CPU throttled 4x")
    print(f"  JS + CSS transferred: {code / 1024:.1f} KB (target < 300 KB) {'met' if code < 300 * 1024 else 'NOT met'}")
    print(f"  interactive: median {statistics.median(ready):.0f} ms, max {max(ready):.0f} ms "
          f"(target < 2000 ms) {'met' if statistics.median(ready) < 2000 else 'NOT met'}")


if __name__ == "__main__":
    main()
