"""Loopback load test of the prediction server: requests/s and p50/p95/p99 latency of POST /predict.

Against a server that is already running:

    python benchmarks/load_test.py --url http://127.0.0.1:8000 --duration 60 --concurrency 4

Or let the script start ``behaviorlm serve`` on a free loopback port and stop it afterwards:

    python benchmarks/load_test.py --run RUN_OR_DATASET --duration 60 --concurrency 4 --out load.json

The test is bounded both in requests (``--requests``) and in time (``--duration``), whichever ends first, and
refuses any host that is not loopback. Request bodies are real histories from the dataset's test split when
the data folder is at hand (``--run``), else random sequences over ``GET /behaviors``; either way drawn with a
fixed seed. The server's ``/health`` batch counter gives the mean number of requests per model call, which
shows how much the micro-batching helps under concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import shlex
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run: str, model: str | None, port: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "behaviorlm.cli", "serve", "--run", run, "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", *extra]
    if model:
        command += ["--model", model]
    return subprocess.Popen(command)


def wait_ready(url: str, timeout: float, server: subprocess.Popen | None = None) -> dict:
    """Poll /health until it answers (the server loads the model first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode} before it was ready")
        try:
            response = httpx.get(f"{url}/health", timeout=5)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout:.0f} s")


def dataset_histories(run: str | None, limit: int, seed: int) -> list[dict] | None:
    """Request bodies from the test split of the run's data (None when there is no data folder)."""
    if run is None:
        return None
    from behaviorlm.data.types import PreparedData

    root = Path(run)
    root = root if (root / "stats.json").is_file() else root / "data"
    if not (root / "test.parquet").is_file():
        return None
    samples = PreparedData(root).split("test")
    picked = random.Random(seed).sample(samples, min(limit, len(samples)))
    return [
        {
            "events": [{"time": e.time.isoformat(), "place": e.place, "behavior": e.behavior} for e in s.history],
            "next": {"time": s.target.time.isoformat(), "place": s.target.place},
        }
        for s in picked
    ]


def random_histories(behaviors: list[str], history_len: int, count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    places = ["home", "work", "shop", "gym", "restaurant", ""]
    bodies = []
    for _ in range(count):
        time_ = datetime(2024, 5, 6) + timedelta(minutes=rng.randrange(7 * 24 * 60))
        events = []
        for _ in range(history_len):
            time_ += timedelta(minutes=rng.randrange(5, 240))
            events.append({"time": time_.isoformat(), "place": rng.choice(places), "behavior": rng.choice(behaviors)})
        bodies.append({"events": events})
    return bodies


async def load(url: str, bodies: list[dict], k: int, concurrency: int, max_requests: int, duration: float,
               timeout: float) -> tuple[list[float], dict[str, int], float]:
    """Closed loop: ``concurrency`` clients each send the next request when their last one is answered."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    sent = 0
    start = time.perf_counter()
    deadline = start + duration

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < max_requests and time.perf_counter() < deadline:
            body = dict(bodies[sent % len(bodies)], k=k)
            sent += 1
            t0 = time.perf_counter()
            try:
                response = await http.post(f"{url}/predict", json=body)
                key = str(response.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1
            if key == "200":
                latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return latencies, statuses, time.perf_counter() - start


def summarize(latencies: list[float], statuses: dict[str, int], elapsed: float) -> dict:
    ms = np.array(latencies) * 1000
    stats = {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)} if len(ms) else {}
    if len(ms):
        stats.update(mean=round(float(ms.mean()), 1), max=round(float(ms.max()), 1))
    return {
        "requests": sum(statuses.values()),
        "ok": len(latencies),
        "statuses": statuses,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 3) if elapsed > 0 else 0.0,
        "latency_ms": stats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 (loopback only)")
    target.add_argument("--run", help="run or prepared dataset folder: start `behaviorlm serve` on a free port")
    parser.add_argument("--model", default=None, help="with --run: the model to serve (see `behaviorlm serve --help`)")
    parser.add_argument("--requests", type=int, default=1000, help="stop after this many requests")
    parser.add_argument("--duration", type=float, default=60.0, help="stop after this many seconds")
    parser.add_argument("--concurrency", type=int, default=4, help="simultaneous clients")
    parser.add_argument("--k", type=int, default=5, help="top-k asked for in each request")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests sent first")
    parser.add_argument("--timeout", type=float, default=120.0, help="per-request timeout (s)")
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="with --run: seconds to wait for the model to load")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request bodies")
    parser.add_argument("--server-arg", action="append", default=[], help="with --run: extra `serve` option, e.g. --server-arg=--max-batch=16")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)

    server = None
    url = args.url.rstrip("/") if args.url else None
    if url is not None and not is_loopback(url):
        parser.error(f"{url}: only loopback hosts (127.0.0.1, ::1, localhost) are allowed")
    try:
        if args.run is not None:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            server = start_server(args.run, args.model, port, args.server_arg)
        health = wait_ready(url, args.startup_timeout, server)
        behaviors = [b["name"] for b in httpx.get(f"{url}/behaviors", timeout=10).json()["behaviors"]]
        k = min(args.k, len(behaviors))
        bodies = dataset_histories(args.run, 256, args.seed) or random_histories(
            behaviors, health.get("history_len", 20), 256, args.seed)
        if args.warmup:
            asyncio.run(load(url, bodies, k, 1, args.warmup, args.duration, args.timeout))
        before = httpx.get(f"{url}/health", timeout=10).json()
        latencies, statuses, elapsed = asyncio.run(
            load(url, bodies, k, args.concurrency, args.requests, args.duration, args.timeout))
        after = httpx.get(f"{url}/health", timeout=10).json()
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()

    result = summarize(latencies, statuses, elapsed)
    calls = after.get("batches", 0) - before.get("batches", 0)
    result.update(
        model=health.get("model"),
        behaviors=len(behaviors),
        events_per_request=len(bodies[0]["events"]),
        concurrency=args.concurrency,
        k=k,
        model_calls=calls,
        requests_per_model_call=round(result["ok"] / calls, 2) if calls else None,
        command=" ".join(shlex.quote(a) for a in ["python", "benchmarks/load_test.py", *(argv if argv is not None else sys.argv[1:])]),
    )
    lat = result["latency_ms"]
    print(f"{result['ok']}/{result['requests']} ok in {result['seconds']} s: {result['requests_per_s']} requests/s; "
          f"latency p50 {lat.get('p50')} ms, p95 {lat.get('p95')} ms, p99 {lat.get('p99')} ms "
          f"(concurrency {args.concurrency}, {result['requests_per_model_call']} requests per model call)")
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
