"""Per-request cost without the network: both apps called as WSGI in one process.

    python benchmarks/wsgi_inprocess.py --rounds 8 --calls 1000 --path /api/shop/home [--hand-first]

Builds the core_app app (``create_app``, the example plugins only) and the hand-wired
app, then calls them in turns, one request each (A B B A ...), adding up the CPU time
each spends, so that whatever else the machine does falls on both alike. Prints JSON:
per path, per round of ``--calls`` requests each, the CPU seconds of each app.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.test import EnvironBuilder

sys.path.insert(0, str(Path(__file__).resolve().parent))

from handwired_app import create_handwired_app

from core_app import create_app


def call(app: Flask, environ: dict[str, Any], statuses: list[str]) -> None:
    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    body = app(dict(environ), start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def interleaved(apps: dict[str, Flask], environ: dict[str, Any], calls: int) -> dict[str, float]:
    """CPU seconds each app spent on ``calls`` requests, the apps taking turns per call."""
    statuses: list[str] = []
    spent = dict.fromkeys(apps, 0.0)
    names = list(apps)
    for i in range(calls):
        for name in names if i % 2 == 0 else reversed(names):
            started = time.process_time()
            call(apps[name], environ, statuses)
            spent[name] += time.process_time() - started
    bad = [s for s in statuses if not s.startswith("200")]
    if bad:
        raise SystemExit(f"unexpected statuses {bad[:3]}")
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--path", action="append", required=True)
    parser.add_argument("--hand-first", action="store_true", help="build the hand-wired first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="core_app_wsgi_") as folder:
        measure(args, Path(folder))


def measure(args: argparse.Namespace, root: Path) -> None:
    builders = {
        "core": lambda: create_app(
            {
                "INSTANCE_PATH": str(root / "core"),
                "PLUGINS": ["shop", "notifications"],
                "PLUGIN_ERRORS": "raise",
            }
        ),
        "hand": lambda: create_handwired_app(str(root / "hand")),
    }
    # The app built first runs about 1.5% faster here, whichever it is (two hand-wired
    # apps show it too): run.py runs this both ways round and pools the rounds.
    order = ["hand", "core"] if args.hand_first else ["core", "hand"]
    apps = {name: builders[name]() for name in order}
    for app in apps.values():
        client = app.test_client()
        for i in range(5):
            user = {"name": f"User {i}", "email": f"user{i}@example.org"}
            assert client.post("/api/shop/users", json=user).status_code == 201
    results: dict[str, dict[str, list[float]]] = {}
    for path in args.path:
        environ = EnvironBuilder(path=path, base_url="http://127.0.0.1/").get_environ()
        interleaved(apps, environ, 200)  # warm-up
        rounds = []
        for _ in range(args.rounds):
            gc.collect()
            rounds.append(interleaved(apps, environ, args.calls))
        results[path] = {name: [r[name] for r in rounds] for name in apps}
    print(json.dumps({"calls": args.calls, "results": results}))


if __name__ == "__main__":
    main()
