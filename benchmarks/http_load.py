"""A small HTTP load generator, run as its own process by the benchmarks.

A fixed number of threads, each with one ``http.client`` connection per server, kept
alive where the server allows it (gunicorn's sync workers close after each response; the
connection then reopens by itself). Bounded in time and in count, and only ever aimed at
127.0.0.1. Two modes:

Alternating slices, to compare servers on a noisy machine::

    python benchmarks/http_load.py --ports 8001,8002 --path /api/shop/home \
        --threads 4 --slices 12 --slice-seconds 1.5

All threads load one server for a slice, then the other (A B B A A B ...), so that
whatever else the machine does falls on both alike. A request counts for a slice only
if it starts after the slice's settling time and ends within the slice. Prints JSON:
per slice, the server's index, requests/s and the latencies in milliseconds.

A fixed number of requests to one server, for latency::

    python benchmarks/http_load.py --ports 8001 --path /x --method POST --body '{}' \
        --threads 1 --requests 100 --warmup 0.5

Prints JSON: requests counted, errors, latency percentiles in milliseconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import threading
import time
from typing import Any

HOST = "127.0.0.1"  # never anything but loopback


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def summary(latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "p50_ms": percentile(ordered, 50) * 1000,
        "p90_ms": percentile(ordered, 90) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "max_ms": (ordered[-1] if ordered else float("nan")) * 1000,
    }


def slice_order(count: int, servers: int) -> list[int]:
    """A B B A A B B A ... for two servers; round-robin otherwise."""
    if servers != 2:
        return [i % servers for i in range(count)]
    return [(i + 1) // 2 % 2 for i in range(count)]


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ports = [int(p) for p in args.ports.split(",")]
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.body = args.body.encode() if args.body is not None else None
        self.headers = {"Content-Type": "application/json"} if args.body is not None else {}
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.total_ok = 0
        self.begin = 0.0

    def request(self, conn: http.client.HTTPConnection) -> tuple[bool, float, float]:
        started = time.perf_counter()
        try:
            conn.request(self.args.method, self.args.path, body=self.body, headers=self.headers)
            response = conn.getresponse()
            response.read()
            ok, kind = response.status == self.args.expect, str(response.status)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            ok, kind = False, type(exc).__name__
        ended = time.perf_counter()
        with self.lock:
            if ok:
                self.total_ok += 1
            else:
                self.errors += 1
                self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
                if self.errors > self.args.max_errors:
                    self.stop.set()
        return ok, started, ended

    def run_threads(self, target: Any) -> None:
        threads = [threading.Thread(target=target, daemon=True) for _ in range(self.args.threads)]
        self.begin = time.perf_counter()
        hard_stop = self.begin + self.args.max_seconds
        for thread in threads:
            thread.start()
        while not self.stop.is_set() and time.perf_counter() < hard_stop:
            self.stop.wait(0.01)
        self.stop.set()
        for thread in threads:
            thread.join(timeout=self.args.timeout + 5)

    # -- slices -------------------------------------------------------------------------

    def slices(self) -> dict[str, Any]:
        args = self.args
        order = slice_order(args.slices, len(self.ports))
        latencies: list[list[float]] = [[] for _ in order]
        served = [0] * len(self.ports)  # every answered request, counted or not

        def worker() -> None:
            conns = [http.client.HTTPConnection(HOST, p, timeout=args.timeout) for p in self.ports]
            try:
                while not self.stop.is_set():
                    index = int((time.perf_counter() - self.begin) // args.slice_seconds)
                    if index >= len(order):
                        self.stop.set()
                        return
                    ok, started, ended = self.request(conns[order[index]])
                    if ok:
                        with self.lock:
                            served[order[index]] += 1
                    slice_start = self.begin + index * args.slice_seconds
                    counted = (
                        ok
                        and started >= slice_start + args.settle
                        and ended < slice_start + args.slice_seconds
                    )
                    if counted:
                        with self.lock:
                            latencies[index].append(ended - started)
            finally:
                for conn in conns:
                    conn.close()

        self.run_threads(worker)
        window = args.slice_seconds - args.settle
        return {
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "served": served,
            "slices": [
                {"server": server, "rps": len(lat) / window, **summary(lat)}
                for server, lat in zip(order, latencies, strict=True)
            ],
            "latencies_ms": [[round(x * 1000, 3) for x in lat] for lat in latencies],
        }

    # -- count --------------------------------------------------------------------------

    def count(self) -> dict[str, Any]:
        args = self.args
        latencies: list[float] = []

        def worker() -> None:
            conn = http.client.HTTPConnection(HOST, self.ports[0], timeout=args.timeout)
            try:
                while not self.stop.is_set():
                    ok, started, ended = self.request(conn)
                    if not ok or started < self.begin + args.warmup:
                        continue
                    with self.lock:
                        latencies.append(ended - started)
                        if len(latencies) >= args.requests:
                            self.stop.set()
            finally:
                conn.close()

        self.run_threads(worker)
        return {
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "total_ok": self.total_ok,
            **summary(latencies),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", required=True, help="port, or ports to alternate")
    parser.add_argument("--path", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", help="JSON request body")
    parser.add_argument("--expect", type=int, default=200, help="status counted as success")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--slices", type=int, default=0, help="alternating slices")
    parser.add_argument("--slice-seconds", type=float, default=1.5)
    parser.add_argument("--settle", type=float, default=0.2, help="uncounted start of a slice")
    parser.add_argument("--requests", type=int, default=0, help="count mode: this many")
    parser.add_argument("--warmup", type=float, default=0.5, help="count mode: seconds")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="hard time bound")
    parser.add_argument("--max-errors", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    if bool(args.slices) == bool(args.requests):
        parser.error("give either --slices or --requests")
    load = Load(args)
    print(json.dumps(load.slices() if args.slices else load.count()))


if __name__ == "__main__":
    main()
