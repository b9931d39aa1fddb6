"""Benchmark 7: plugin data on PostgreSQL, against real gunicorn servers.

- ``GET /api/shop/users`` (100 rows): core_app (``run:app``, the shop's view through
  ``core_app.db.session()``) against the hand-wired Flask app (``handwired_app:app``: its
  own engine and session, the same query on the shop's models), both on one PostgreSQL
  database.
- ``POST /api/shop/purchases``: the shop queueing the receipt in the purchase's
  transaction (the outbox: an insert, then a delete after publishing) against the same
  route sending it with ``send_task`` after the commit (``SHOP_RECEIPTS_THROUGH_OUTBOX
  =false``), both core_app, on one database and one Redis.

Each pair of servers is loaded in alternating slices by ``http_load.py`` (A B B A ...),
one at a time; each figure is the median of the per-pair ratios. PostgreSQL is the
server of ``CORE_APP_TEST_DATABASE_URL`` when set (a database is made there and dropped
after), else a private cluster (``core_app.servers.PostgresServer``).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    PYTHON,
    REPO,
    Processes,
    Result,
    free_port,
    http_status,
    median,
    ms,
    spread,
    tail,
    tree_cpu_seconds,
    wait_http,
)
from web_bench import WORKERS, gunicorn, load

USERS = 100
PURCHASE = {"user_id": 1, "item": "tea", "quantity": 1, "price_cents": 350}


@contextmanager
def postgres_database(workdir: Path) -> Iterator[str]:
    """A new database on the machine's server (CORE_APP_TEST_DATABASE_URL) or a private one."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from core_app.servers import PostgresServer

    server = None
    given = os.environ.get("CORE_APP_TEST_DATABASE_URL")
    if given:
        admin_url = make_url(given).set(drivername="postgresql+psycopg")
    else:
        server = PostgresServer().start()
        admin_url = make_url(server.url())
    name = f"core_app_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        if server is not None:
            server.remove()


def run(quick: bool, workdir: Path, redis_url: str) -> list[Result]:
    workdir.mkdir(parents=True, exist_ok=True)
    slices, seconds = (16, 1.25) if quick else (32, 1.5)
    with postgres_database(workdir) as url, Processes() as procs:
        core_env = {
            "CORE_APP_INSTANCE_PATH": str(workdir / "core_instance"),
            "CORE_APP_PLUGINS": "shop,notifications",
            "CORE_APP_PLUGIN_ERRORS": "raise",
            "CORE_APP_BROKER_URL": redis_url,
            "CORE_APP_DATABASE_URL": url,
        }
        upgrade = procs.start(
            [PYTHON, "run.py", "db", "upgrade"], env=core_env, cwd=REPO, log=workdir / "up.log"
        )
        if upgrade.wait(timeout=120) != 0:
            raise RuntimeError(f"db upgrade failed:\n{tail(workdir / 'up.log')}")
        ports = {name: free_port() for name in ("core", "hand", "direct")}
        servers = {
            "core": procs.start(
                gunicorn("run:app", ports["core"]), cwd=REPO, env=core_env, log=workdir / "c.log"
            ),
            "hand": procs.start(
                gunicorn("handwired_app:app", ports["hand"]),
                cwd=BENCH_DIR,
                env={"BENCH_INSTANCE_PATH": str(workdir / "hand"), "BENCH_DATABASE_URL": url},
                log=workdir / "h.log",
            ),
            "direct": procs.start(
                gunicorn("run:app", ports["direct"]),
                cwd=REPO,
                env={**core_env, "CORE_APP_SHOP_RECEIPTS_THROUGH_OUTBOX": "false"},
                log=workdir / "d.log",
            ),
        }
        for name, process in servers.items():
            wait_http(ports[name], "/api/shop/home", process, workdir / f"{name[0]}.log")
        for i in range(USERS):
            user = {"name": f"User {i}", "email": f"user{i}@example.org"}
            if http_status(ports["core"], "/api/shop/users", "POST", user) != 201:
                raise RuntimeError("seeding users failed")
        options = {"threads": 4, "slices": slices, "slice_seconds": seconds}
        timeout = slices * seconds + 120
        pids = {name: servers[name].pid for name in ("core", "hand")}
        cpu_before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        users = load(f"{ports['core']},{ports['hand']}", "/api/shop/users", timeout, **options)
        cpu = {
            name: (tree_cpu_seconds(pid) - cpu_before[name]) / served
            for (name, pid), served in zip(pids.items(), users["served"], strict=True)
        }
        purchases = load(
            f"{ports['core']},{ports['direct']}",
            "/api/shop/purchases",
            timeout,
            method="POST",
            body=json.dumps(PURCHASE),
            expect=201,
            **options,
        )
    how = (
        f"{slices // 2} A/B pairs of {seconds:g} s slices, gunicorn {WORKERS} sync workers "
        "per app, 4 client threads, one PostgreSQL database"
    )
    rps, rate = _pairs(users)
    out_rps, out_rate = _pairs(purchases)
    out_p50, p50 = _pairs(purchases, "p50_ms")
    return [
        Result(
            f"HTTP throughput GET /api/shop/users ({USERS} rows, PostgreSQL): core_app / "
            "hand-wired Flask + SQLAlchemy",
            median(rps),
            ">= 0.98",
            f"median req/s core {rate[0]:.0f}, hand-wired {rate[1]:.0f}; per-pair ratios "
            f"{spread(rps)}; {how}",
            "7 plugin data",
        ),
        Result(
            f"HTTP server CPU per request GET /api/shop/users ({USERS} rows, PostgreSQL): "
            "core_app / hand-wired",
            cpu["core"] / cpu["hand"],
            "<= 1.02",
            f"CPU time of the gunicorn processes per request served: core {ms(cpu['core'])}, "
            f"hand-wired {ms(cpu['hand'])} ({users['served'][0]} and {users['served'][1]} "
            "requests, the same run); steadier than req/s when other processes share the machine",
            "7 plugin data",
        ),
        Result(
            "HTTP throughput POST /api/shop/purchases: receipt through the outbox / "
            "send_task after commit",
            median(out_rps),
            None,
            f"median req/s outbox {out_rate[0]:.0f}, send_task after commit "
            f"{out_rate[1]:.0f}; per-pair ratios {spread(out_rps)}; {how}",
            "7 plugin data",
        ),
        Result(
            "HTTP p50 latency POST /api/shop/purchases: outbox / send_task after commit",
            median(out_p50),
            None,
            f"median p50 outbox {p50[0]:.2f} ms, send_task after commit {p50[1]:.2f} ms",
            "7 plugin data",
        ),
    ]


def _pairs(data: dict[str, Any], key: str = "rps") -> tuple[list[float], dict[int, float]]:
    """Per-pair ratios server 0 / server 1 of ``key``, and each server's median."""
    slices = data["slices"]
    pairs = [{s["server"]: s for s in slices[i : i + 2]} for i in range(0, len(slices) - 1, 2)]
    ratios = [p[0][key] / p[1][key] for p in pairs]
    medians = {n: median([s[key] for s in slices if s["server"] == n]) for n in (0, 1)}
    return ratios, medians
