"""A steady, bounded HTTP load from its own process: ``python loadgen.py PORT RATE SECONDS``.

Sends RATE requests per second in total, over keep-alive connections, for SECONDS, cycling
through a few read and write routes; prints one JSON line with counts and latencies.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time

THREADS = 4
REQUESTS = [
    ("GET", "/api/shop/home", None),
    ("GET", "/api/shop/users", None),
    ("GET", "/health", None),
    ("POST", "/api/shop/users", {"name": "Load", "email": "load-{run}-{n}@example.org"}),
    ("GET", "/api/shop/purchases", None),
]


def worker(port: int, interval: float, deadline: float, offset: int, out: dict) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    n = offset
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        method, path, body = REQUESTS[n % len(REQUESTS)]
        payload = None
        headers = {}
        if body is not None:
            payload = json.dumps({k: v.format(n=n, run=os.getpid()) for k, v in body.items()})
            headers["Content-Type"] = "application/json"
        started = time.monotonic()
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            response.read()
            ok = response.status < 400
        except OSError:
            ok = False
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        out["latencies"].append(time.monotonic() - started)
        out["errors" if not ok else "ok"] += 1
        n += THREADS
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def main() -> None:
    port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    deadline = time.monotonic() + seconds
    results = [{"ok": 0, "errors": 0, "latencies": []} for _ in range(THREADS)]
    threads = [
        threading.Thread(target=worker, args=(port, THREADS / rate, deadline, i, results[i]))
        for i in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = sorted(x for r in results for x in r["latencies"])
    print(
        json.dumps(
            {
                "ok": sum(r["ok"] for r in results),
                "errors": sum(r["errors"] for r in results),
                "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
                "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
            }
        )
    )


if __name__ == "__main__":
    main()
