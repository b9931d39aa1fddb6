"""Benchmarks 1 (request overhead) and 3 (offloading), against real gunicorn servers.

Two servers run side by side for the whole section, each ``gunicorn`` with the same
number of sync workers: the core_app app (``run:app`` from the repository, the example
plugins, Redis as broker) and the hand-wired app (``handwired_app:app``). Load comes from
``http_load.py`` in a separate process, one server at a time, alternating which goes
first each round; each figure is the median over the rounds of the per-round ratio.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from common import (
    BENCH_DIR,
    PYTHON,
    REPO,
    Processes,
    Result,
    free_port,
    median,
    ms,
    percentile,
    quartiles,
    run_json,
    spread,
    tail,
    tree_cpu_seconds,
    wait_for,
    wait_http,
)

WORKERS = 2
EMAIL = {"to": "ann@example.org", "subject": "Hello", "body": "Hi Ann, this is a benchmark."}
SMTP_DELAY = 0.2


@dataclass
class Settings:
    paths: list[str]
    threads: int
    slices: int
    slice_seconds: float
    wsgi_rounds: int
    wsgi_calls: int
    offload_rounds: int
    sync_requests: int
    enqueue_requests: int


QUICK = Settings(["/api/shop/home"], 4, 24, 1.25, 4, 1000, 3, 6, 40)
FULL = Settings(["/api/shop/home", "/api/shop/users"], 4, 40, 1.5, 8, 1000, 5, 12, 100)


def gunicorn(target: str, port: int) -> list[str]:
    return [
        PYTHON,
        "-m",
        "gunicorn",
        "--workers",
        str(WORKERS),
        "--worker-class",
        "sync",
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        target,
    ]


def load(port: int | str, path: str, timeout: float, **options: Any) -> dict[str, Any]:
    command = [PYTHON, str(BENCH_DIR / "http_load.py"), "--ports", str(port), "--path", path]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    result: dict[str, Any] = run_json(command, timeout=timeout)
    if result["errors"]:
        raise RuntimeError(f"{path} on port {port}: {result['errors']} errors {result}")
    return result


def run(quick: bool, workdir: Path, redis_url: str, sections: set[str]) -> list[Result]:
    settings = QUICK if quick else FULL
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    with Processes() as procs:
        smtp_port = free_port()
        sink_count = workdir / "smtp.count"
        procs.start(
            [
                PYTHON,
                str(BENCH_DIR / "smtp_sink.py"),
                "--port",
                str(smtp_port),
                "--delay",
                str(SMTP_DELAY),
                "--count-file",
                str(sink_count),
            ],
            log=workdir / "smtp.log",
        )
        core_port, hand_port = free_port(), free_port()
        core_log, hand_log = workdir / "core_gunicorn.log", workdir / "hand_gunicorn.log"
        core = procs.start(
            gunicorn("run:app", core_port),
            cwd=REPO,
            log=core_log,
            env={
                "CORE_APP_INSTANCE_PATH": str(workdir / "core_instance"),
                "CORE_APP_PLUGINS": "shop,notifications",
                "CORE_APP_PLUGIN_ERRORS": "raise",
                "CORE_APP_BROKER_URL": redis_url,
            },
        )
        hand = procs.start(
            gunicorn("handwired_app:app", hand_port),
            cwd=BENCH_DIR,
            log=hand_log,
            env={
                "BENCH_INSTANCE_PATH": str(workdir / "hand_instance"),
                "BENCH_SMTP_PORT": str(smtp_port),
            },
        )
        wait_http(core_port, "/api/shop/home", core, core_log)
        wait_http(hand_port, "/api/shop/home", hand, hand_log)
        wait_for(sink_count.exists, 30, "the SMTP sink")
        ports = {"core": core_port, "hand": hand_port}
        try:
            if "overhead" in sections:
                seed_users(ports)
                results += overhead(settings, ports, {"core": core.pid, "hand": hand.pid})
                results += overhead_inprocess(settings, workdir)
            if "offload" in sections:
                results += offload(settings, ports, redis_url, sink_count)
        except Exception:
            print(tail(core_log), tail(hand_log))
            raise
    return results


def seed_users(ports: dict[str, int]) -> None:
    from common import http_status

    for port in ports.values():
        for i in range(5):
            user = {"name": f"User {i}", "email": f"user{i}@example.org"}
            status = http_status(port, "/api/shop/users", "POST", user)
            if status not in (201, 400):  # 400: already there from an earlier section run
                raise RuntimeError(f"seeding users on port {port} answered {status}")


def overhead(settings: Settings, ports: dict[str, int], pids: dict[str, int]) -> list[Result]:
    results = []
    for path in settings.paths:
        cpu_before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        data = load(
            f"{ports['core']},{ports['hand']}",
            path,
            timeout=settings.slices * settings.slice_seconds + 120,
            threads=settings.threads,
            slices=settings.slices,
            slice_seconds=settings.slice_seconds,
        )
        cpu = {name: tree_cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        per_request = {
            name: cpu[name] / served for name, served in zip(pids, data["served"], strict=True)
        }
        slices = data["slices"]
        pairs = [{s["server"]: s for s in slices[i : i + 2]} for i in range(0, len(slices) - 1, 2)]
        rps = [p[0]["rps"] / p[1]["rps"] for p in pairs]
        p50 = [p[0]["p50_ms"] / p[1]["p50_ms"] for p in pairs]
        pooled = {
            server: sorted(
                x
                for s, lat in zip(slices, data["latencies_ms"], strict=True)
                if s["server"] == server
                for x in lat
            )
            for server in (0, 1)
        }
        p99 = {server: percentile(lat, 99) for server, lat in pooled.items()}
        rate = {
            server: median([s["rps"] for s in slices if s["server"] == server]) for server in (0, 1)
        }
        half = {
            server: median([s["p50_ms"] for s in slices if s["server"] == server])
            for server in (0, 1)
        }
        how = (
            f"{len(pairs)} A/B pairs of {settings.slice_seconds:g} s slices (ABBA order, "
            f"first 0.2 s of each slice not counted), gunicorn {WORKERS} sync workers per "
            f"app, {settings.threads} client threads in one separate process"
        )
        results += [
            Result(
                f"HTTP throughput GET {path}: core_app / hand-wired",
                median(rps),
                ">= 0.98",
                f"median req/s core {rate[0]:.0f}, hand-wired {rate[1]:.0f}; per-pair "
                f"ratios {spread(rps)} (quartiles {quartiles(rps)}); {how}",
                "1 request overhead",
            ),
            Result(
                f"HTTP server CPU per request GET {path}: core_app / hand-wired",
                per_request["core"] / per_request["hand"],
                "<= 1.02",
                f"CPU time of the gunicorn processes per request served: core "
                f"{ms(per_request['core'])}, hand-wired {ms(per_request['hand'])} "
                f"({data['served'][0]} and {data['served'][1]} requests, the same run); "
                "steadier than req/s when other processes share the machine",
                "1 request overhead",
            ),
            Result(
                f"HTTP p50 latency GET {path}: core_app / hand-wired",
                median(p50),
                None,
                f"median p50 core {half[0]:.2f} ms, hand-wired {half[1]:.2f} ms; median of "
                f"per-pair ratios, quartiles {quartiles(p50)}",
                "1 request overhead",
            ),
            Result(
                f"HTTP p99 latency GET {path}: core_app / hand-wired",
                p99[0] / p99[1],
                None,
                f"p99 over all slices core {p99[0]:.2f} ms ({len(pooled[0])} requests), "
                f"hand-wired {p99[1]:.2f} ms ({len(pooled[1])} requests)",
                "1 request overhead",
            ),
        ]
    return results


def overhead_inprocess(settings: Settings, workdir: Path) -> list[Result]:
    command = [
        PYTHON,
        str(BENCH_DIR / "wsgi_inprocess.py"),
        "--rounds",
        str(settings.wsgi_rounds),
        "--calls",
        str(settings.wsgi_calls),
    ]
    for path in settings.paths:
        command += ["--path", path]
    env = {"BENCH_INSTANCE_PATH": str(workdir / "wsgi_module_instance")}  # handwired_app.app
    runs = [
        run_json(command + flag, cwd=REPO, env=env, timeout=600) for flag in ([], ["--hand-first"])
    ]
    results = []
    for path in settings.paths:
        core = [x for run in runs for x in run["results"][path]["core"]]
        hand = [x for run in runs for x in run["results"][path]["hand"]]
        ratios = [h / c for c, h in zip(core, hand, strict=True)]
        calls = runs[0]["calls"]
        results.append(
            Result(
                f"In-process WSGI throughput GET {path}: core_app / hand-wired",
                median(ratios),
                ">= 0.98",
                f"CPU time per request core {ms(median(core) / calls)}, hand-wired "
                f"{ms(median(hand) / calls)}; both apps in one process called in turns, "
                f"{len(ratios)} rounds of {calls} requests each, half of them in a process "
                f"that built the hand-wired app first; per-round ratios {spread(ratios)}",
                "1 request overhead",
            )
        )
    return results


def offload(
    settings: Settings, ports: dict[str, int], redis_url: str, sink_count: Path
) -> list[Result]:
    client = redis.Redis.from_url(redis_url)
    client.delete("notifications")
    body = json.dumps(EMAIL)
    enqueue: list[dict[str, Any]] = []
    sync: list[dict[str, Any]] = []
    sent_before = int(sink_count.read_text() or 0)
    for round_ in range(settings.offload_rounds):
        runs = [
            (
                enqueue,
                dict(
                    port=ports["core"],
                    path="/api/notifications/emails",
                    expect=202,
                    requests=settings.enqueue_requests,
                ),
            ),
            (
                sync,
                dict(
                    port=ports["hand"],
                    path="/sync-email",
                    expect=200,
                    requests=settings.sync_requests,
                ),
            ),
        ]
        if round_ % 2:
            runs.reverse()
        for target, options in runs:
            target.append(
                load(
                    timeout=120,
                    method="POST",
                    body=body,
                    threads=1,
                    warmup=0.5,
                    max_seconds=90,
                    **options,
                )
            )
    queued = int(client.llen("notifications"))
    delivered = int(sink_count.read_text() or 0) - sent_before
    pairs = list(zip(enqueue, sync, strict=True))
    p50 = [e["p50_ms"] / s["p50_ms"] for e, s in pairs]
    p99 = [e["p99_ms"] / s["p99_ms"] for e, s in pairs]

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return median([r[key] for r in runs])

    check = (
        f"Redis held {queued} queued email tasks afterwards (no worker running) and the "
        f"slow SMTP server ({SMTP_DELAY * 1000:.0f} ms in DATA) received {delivered} "
        "synchronous emails"
    )
    if queued == 0 or delivered == 0:
        raise RuntimeError(f"offloading check failed: {check}")
    how = (
        f"{settings.offload_rounds} alternating rounds of {settings.enqueue_requests} "
        f"enqueue and {settings.sync_requests} synchronous POSTs, one client thread"
    )
    return [
        Result(
            "Offloading p50: enqueue (POST /api/notifications/emails) / synchronous SMTP",
            median(p50),
            "<= 0.05",
            f"median p50 enqueue {med(enqueue, 'p50_ms'):.2f} ms, synchronous "
            f"{med(sync, 'p50_ms'):.1f} ms; per-round ratios {spread(p50)}; {how}; {check}",
            "3 offloading",
        ),
        Result(
            "Offloading p99: enqueue / synchronous SMTP",
            median(p99),
            None,
            f"median p99 enqueue {med(enqueue, 'p99_ms'):.2f} ms, synchronous "
            f"{med(sync, 'p99_ms'):.1f} ms; per-round ratios {spread(p99)}",
            "3 offloading",
        ),
    ]
