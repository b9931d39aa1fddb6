"""core_app's benchmarks: each figure a ratio against a hand-wired baseline.

    python benchmarks/run.py                 # the full run, about 12 minutes on 2 cores
    python benchmarks/run.py --quick         # about 3 minutes
    python benchmarks/run.py --json out.json --only overhead,startup

Sections (``--only``): overhead (HTTP and in-process request cost against a hand-wired
Flask app), startup (create_app against hand registration with 1..300 plugins), offload
(enqueueing an email against sending it in the request), throughput (run.py worker
against a bare Celery worker), latency (publish time inside a request, task end-to-end
latency), worker_startup (``run.py worker X`` with 300 plugins installed, exec to ready,
against a bare Celery worker), data (``GET /api/shop/users`` on PostgreSQL against
hand-wired Flask + SQLAlchemy, and the outbox's cost on ``POST /api/shop/purchases``),
api (request validation through a declared schema against the same checks by hand, in
process; building the OpenAPI document for 300 plugins).
Everything it starts (redis-server, gunicorn, Celery workers, an SMTP server, PostgreSQL)
listens on 127.0.0.1 only and is stopped before it exits. Needs the host and the example
plugins installed, gunicorn, aiosmtpd, redis-server and PostgreSQL (see
``missing_requirements``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Result, machine_info, target_met

SECTIONS = (
    "overhead",
    "startup",
    "offload",
    "throughput",
    "latency",
    "worker_startup",
    "data",
    "api",
)
INSTALL = (
    "pip install -e '.[postgresql]' -e plugins/shop -e plugins/notifications gunicorn aiosmtpd "
    "pytest && apt-get install -y redis-server postgresql"
)


def missing_requirements() -> list[str]:
    missing = [
        module
        for module in (
            *("core_app", "core_app_shop", "core_app_notifications"),
            *("gunicorn", "aiosmtpd", "celery", "redis", "pytest", "psycopg"),
        )
        if importlib.util.find_spec(module) is None
    ]
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="core_app benchmarks (ratios, A/B, medians)")
    parser.add_argument("--quick", action="store_true", help="a run of about three minutes")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results here")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    if sections - set(SECTIONS):
        parser.error(f"unknown sections {sorted(sections - set(SECTIONS))}")
    missing = missing_requirements()
    if missing:
        print(f"Missing {', '.join(missing)}. From {REPO}, run first:\n  {INSTALL}")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run every cleanup
    workdir = Path(tempfile.mkdtemp(prefix="core_app_bench_"))
    began = time.monotonic()
    machine = machine_info()
    machine["loadavg_start"] = os.getloadavg()
    results: list[Result] = []
    try:
        results = run_sections(args.quick, sections, workdir)
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    machine["loadavg_end"] = os.getloadavg()
    elapsed = time.monotonic() - began
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    print(table(results))
    print(f"\n{len(results)} figures in {elapsed:.0f} s on {describe(machine)}")
    if args.json:
        document = {
            "command": command,
            "quick": args.quick,
            "sections": sorted(sections),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(elapsed, 1),
            "machine": machine,
            "results": [r.as_dict() for r in results],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def run_sections(quick: bool, sections: set[str], workdir: Path) -> list[Result]:
    import data_bench
    import schema_bench
    import startup
    import tasks_bench
    import web_bench
    import worker_startup

    from core_app.testing import RedisServer

    results: list[Result] = []
    redis_server = None
    try:
        if sections & {"overhead", "offload", "throughput", "latency", "worker_startup", "data"}:
            redis_server = RedisServer(workdir / "redis", appendonly=False).start()
        web = sections & {"overhead", "offload"}
        if web:
            assert redis_server is not None
            progress("1 request overhead, 3 offloading")
            results += web_bench.run(quick, workdir / "web", redis_server.url, web)
        if "startup" in sections:
            progress("2 start-up scaling")
            results += startup.run(quick, workdir / "startup")
        tasks = sections & {"throughput", "latency"}
        if tasks:
            assert redis_server is not None
            progress("4 worker throughput, 5 publish and task latency")
            results += tasks_bench.run(quick, workdir / "tasks", redis_server.url, tasks)
        if "worker_startup" in sections:
            assert redis_server is not None
            progress("6 worker start-up")
            results += worker_startup.run(quick, workdir / "worker_startup", redis_server.url)
        if "data" in sections:
            assert redis_server is not None
            progress("7 plugin data (PostgreSQL)")
            results += data_bench.run(quick, workdir / "data", redis_server.url)
        if "api" in sections:
            progress("8 declared schemas and the API document")
            results += schema_bench.run(quick)
    finally:
        if redis_server is not None:
            redis_server.stop()
    return sorted(results, key=lambda r: r.section[:1])  # stable: in section order


def progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what} ...", file=sys.stderr, flush=True)


def describe(machine: dict[str, Any]) -> str:
    return (
        f"{machine['nproc']} x {machine['cpu_model']}, Python {machine['python']} "
        f"(load average {machine['loadavg_start'][0]:.2f} at start, "
        f"{machine['loadavg_end'][0]:.2f} at end)"
    )


def table(results: list[Result]) -> str:
    lines = [
        "| benchmark | ratio | target | met | detail |",
        "|---|---:|---|---|---|",
    ]
    for r in results:
        met = {True: "yes", False: "**no**", None: "-"}[target_met(r.ratio, r.target)]
        ratio = "-" if r.ratio is None else f"{r.ratio:.3f}"
        lines.append(f"| {r.name} | {ratio} | {r.target or '-'} | {met} | {r.detail} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
