"""Load the collector with batched clients, then kill -9 it under load and check no acknowledged event is lost.

    python -m benchmarks.collector --seconds 60

The collector runs in its own process (`python -m collector`), as `make dev` starts it; the clients are
other processes sending `POST /v1/batch` over keep-alive connections, every event with its own
messageId. Phase 1 prints the sustained rate of acknowledged events and the request latencies. Phase 2
loads it again, kills it with SIGKILL mid-load, restarts it (which publishes the files the dead process
left), and compares the messageIds on disk with every one the clients got a 200 for.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

KEY = "bench-write-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(config: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "CDP_COLLECTOR_WRITE_KEYS": f"website:{KEY}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "collector", "--config", str(config), "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:  # the collector says when it listens
        if "listening on" in line:
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process
    raise RuntimeError(f"the collector exited with {process.wait()} before listening")


def _body(worker: str, seq: int, batch: int) -> bytes:
    sent = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    events = ",".join(
        f'{{"type":"track","userId":"user-{(seq * batch + i) % 5000}","event":"Product Viewed",'
        f'"messageId":"{worker}-{seq}-{i}","timestamp":"{sent}","properties":{{"category":"shoes",'
        f'"sku":"SKU-{i}","price":{i}.5,"url":"https://shop.example.com/products/{i}"}},'
        f'"context":{{"ip":"10.0.0.1","userAgent":"Mozilla/5.0 (bench)","library":{{"name":"bench"}}}}}}'
        for i in range(batch)
    )
    return f'{{"sentAt":"{sent}","batch":[{events}]}}'.encode()


def _client(port: int, worker: str, seconds: float, batch: int, results: mp.Queue) -> None:
    """One client connection: send batches until `seconds` pass or the collector goes away."""
    auth = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": auth}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    acked: list[int] = []
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < deadline:
        body = _body(worker, seq, batch)
        started = time.perf_counter()
        try:
            conn.request("POST", "/v1/batch", body, headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            break  # the collector was killed: this batch was not acknowledged (or the client never read it)
        if response.status == 200:
            latencies.append(time.perf_counter() - started)
            acked.append(seq)
        seq += 1
    results.put((worker, acked, latencies))


def _process(port: int, name: str, threads: int, seconds: float, batch: int, results: mp.Queue) -> None:
    workers = [
        threading.Thread(target=_client, args=(port, f"{name}t{t}", seconds, batch, results)) for t in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def _load(port: int, args: argparse.Namespace, run: str, seconds: float, kill: subprocess.Popen | None = None) -> dict:
    """Run the clients (their messageIds start with `run`); when `kill` is given, SIGKILL it after half of
    `seconds`."""
    results: mp.Queue = mp.Queue()
    processes = [
        mp.Process(target=_process, args=(port, f"{run}p{p}", args.threads, seconds, args.batch, results))
        for p in range(args.processes)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    if kill is not None:
        time.sleep(seconds / 2)  # let the load run, then crash the collector in the middle of it
        kill.send_signal(signal.SIGKILL)
        kill.wait()
    collected = [results.get() for _ in range(args.processes * args.threads)]
    elapsed = time.monotonic() - started
    for process in processes:
        process.join()
    acked = {f"{worker}-{seq}-{i}" for worker, seqs, _ in collected for seq in seqs for i in range(args.batch)}
    latencies = sorted(x for _, _, lat in collected for x in lat)
    return {"acked": acked, "latencies": latencies, "elapsed": elapsed}


def _on_disk(folder: Path) -> list[str]:
    ids = []
    for path in sorted(folder.iterdir()):
        with path.open("rb") as handle:
            ids += [json.loads(line)["messageId"] for line in handle]
    return ids


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="length of the sustained load")
    parser.add_argument("--crash-seconds", type=float, default=10, help="length of the load the kill -9 lands in")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=4, help="connections per client process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "cdp.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "landing": {"path": str(folder / "landing")},
                    "sources": [
                        {"name": "crm", "format": "csv", "glob": "crm/*.csv", "role": "person"},
                        {"name": "website", "format": "segment"},
                    ],
                }
            )
        )
        events = folder / "landing" / "collector" / "website"
        port = _free_port()
        collector = _start(config, port)
        print(
            f"collector pid {collector.pid}; {args.processes} client processes x {args.threads} connections, "
            f"batches of {args.batch} events"
        )
        run = _load(port, args, "load", args.seconds)
        rate = len(run["acked"]) / run["elapsed"]
        lat = run["latencies"]
        print(
            f"sustained: {len(run['acked']):,} events acknowledged in {run['elapsed']:.1f} s = {rate:,.0f} events/s "
            f"({len(lat) / run['elapsed']:,.0f} requests/s)"
        )
        print(
            f"request latency: p50 {_percentile(lat, 0.5) * 1000:.1f} ms, p99 {_percentile(lat, 0.99) * 1000:.1f} ms, "
            f"max {lat[-1] * 1000:.1f} ms"
        )
        collector.send_signal(signal.SIGTERM)
        collector.wait()
        before = len(_on_disk(events))
        print(f"on disk after a clean stop: {before:,} events in {len(list(events.iterdir()))} files")

        collector = _start(config, port)
        crash = _load(port, args, "crash", args.crash_seconds, kill=collector)
        print(f"kill -9 after {args.crash_seconds / 2:.1f} s of load: {len(crash['acked']):,} events acknowledged")
        hidden = len(list(events.glob(".*.part")))
        collector = _start(config, port)  # publishes what the killed process left
        collector.send_signal(signal.SIGTERM)
        collector.wait()
        stored = _on_disk(events)
        present = set(stored)
        lost = (run["acked"] | crash["acked"]) - present
        unacked = len(present - run["acked"] - crash["acked"])
        print(
            f"after restart: {hidden} hidden file(s) recovered; {len(stored) - before:,} events of the crash run "
            f"on disk; acknowledged but lost: {len(lost)}; stored, never acknowledged: {unacked}"
        )
        if lost:
            sys.exit("FAIL: acknowledged events are missing")


if __name__ == "__main__":
    main()
