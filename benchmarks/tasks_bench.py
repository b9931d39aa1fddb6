"""Benchmarks 4 (worker throughput) and 5 (publish and end-to-end task latency).

A generated plugin, ``benchnoop``, is written as a package plus ``*.dist-info`` into a
folder put on PYTHONPATH (what pip would install); its ``benchnoop.tasks`` module holds
``@shared_task(name="benchnoop.noop")``, which records its timestamps in Redis. Nobody
reads the no-op's result, so the plugin declares ``ignore_result`` for it
(``core_app_task_options``), as the shop does for its daily summary.

Four workers run at once on one Redis, each with the same pool and concurrency, each on
its own queue, idle while another is measured:

- core: ``python run.py worker benchnoop`` with the host's defaults (queue ``benchnoop``);
- bare: ``celery -A bare_celery worker``, a bare ``Celery(broker=redis)`` app importing
  the same task module;
- bare + core settings: the same bare app with core_app's delivery settings and result
  backend, and the no-op's result ignored as the plugin declares: what in a gap comes
  from those settings (late acknowledgement, prefetch, Redis sweeps) rather than from
  the host;
- core, results stored: ``run.py worker benchnoop`` again, on another queue
  (``PLUGIN_QUEUES``), where the plugin does not declare ``ignore_result``: what storing
  every result costs.

Throughput: K tasks are queued on a staging list while nothing consumes it, then the list
is renamed to the worker's queue; the tasks' own timestamps give the time from the first
task's start to the last task's end. Each round measures every worker twice, in ABCDDCBA
order rotated from round to round, and a figure is the median of per-round ratios.

Latency: single no-op tasks sent alternately to the core, bare and bare + core settings
workers, each carrying its send time; the task records ``now - sent`` as it starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from common import (
    BENCH_DIR,
    PYTHON,
    REPO,
    Processes,
    Result,
    median,
    ms,
    percentile,
    quartiles,
    run_json,
    spread,
    tail,
    tree_cpu_seconds,
    wait_for,
    write_distribution,
)

TASK = "benchnoop.noop"
TIMES, LATENCY = "bench:times", "bench:latency"
STAGING = "bench_staging"

NOOP_TASKS = '''"""Tasks of the generated benchnoop plugin (queue 'benchnoop')."""

import os
import time

import redis
from celery import shared_task

_client = None


def _redis():
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _client


@shared_task(name="benchnoop.noop")
def noop(sent=None, tag=""):
    """Do nothing; record when (throughput) or how long after it was sent (latency)."""
    started = time.time()
    if sent is not None:
        _redis().rpush("bench:latency", f"{tag} {started - sent!r}")
        return None
    _redis().rpush("bench:times", f"{started!r} {time.time()!r}")
    return None
'''

NOOP_PLUGIN = '''"""Generated benchmark plugin: one no-op task, no routes."""

import os

from core_app import hookimpl


@hookimpl
def core_app_task_options():
    # Nobody reads the no-op's result: stored only when the benchmark asks.
    return {"benchnoop.noop": {"ignore_result": not os.environ.get("BENCH_STORE_RESULTS")}}
'''


@dataclass
class Settings:
    tasks: int
    rounds: int
    latency_tasks: int
    publish_rounds: int
    publish_requests: int


QUICK = Settings(500, 6, 100, 3, 100)
FULL = Settings(1000, 20, 300, 5, 300)

POOL = ["--pool", "prefork", "--concurrency", "2"]
WORKER_FLAGS = [*POOL, "--without-gossip", "--without-mingle", "--loglevel", "WARNING"]


@dataclass
class Worker:
    key: str
    label: str
    queue: str
    command: list[str]
    env: dict[str, str]
    cwd: Path


def write_noop_plugin(root: Path) -> Path:
    site = root / "noop_site"
    write_distribution(
        site,
        distribution="core-app-benchnoop",
        package="benchnoop",
        files={
            "__init__.py": NOOP_PLUGIN,
            "tasks.py": NOOP_TASKS,
        },
        entry_points={"benchnoop": "benchnoop"},
    )
    return site


def workers(site: Path, redis_url: str, workdir: Path) -> list[Worker]:
    common_env = {"BENCH_REDIS_URL": redis_url, "BENCH_BROKER_URL": redis_url}
    bare_env = {**common_env, "PYTHONPATH": f"{site}:{BENCH_DIR}"}
    celery = [PYTHON, "-m", "celery", "-A", "bare_celery", "worker"]
    core = [PYTHON, "run.py", "worker", "benchnoop", *WORKER_FLAGS]
    core_env = {
        **common_env,
        "PYTHONPATH": str(site),
        "CORE_APP_BROKER_URL": redis_url,
        "CORE_APP_INSTANCE_PATH": str(workdir / "worker_instance"),
        "CORE_APP_PLUGINS": "benchnoop",
        "CORE_APP_PLUGIN_ERRORS": "raise",
    }
    return [
        Worker("core", "core_app worker", "benchnoop", [*core, "-n", "core@%h"], core_env, REPO),
        Worker(
            "bare",
            "bare Celery worker",
            "bench_bare",
            [*celery, "-Q", "bench_bare", *WORKER_FLAGS, "-n", "bare@%h"],
            bare_env,
            BENCH_DIR,
        ),
        Worker(
            "tuned",
            "bare Celery + core_app delivery settings",
            "bench_tuned",
            [*celery, "-Q", "bench_tuned", *WORKER_FLAGS, "-n", "tuned@%h"],
            {**bare_env, "BENCH_BARE_SETTINGS": "core"},
            BENCH_DIR,
        ),
        Worker(
            "stored",
            "core_app worker storing every result",
            "bench_stored",
            [*core, "-n", "stored@%h"],
            {
                **core_env,
                "BENCH_STORE_RESULTS": "1",
                "CORE_APP_PLUGIN_QUEUES__benchnoop": "bench_stored",
                "CORE_APP_INSTANCE_PATH": str(workdir / "stored_instance"),
            },
            REPO,
        ),
    ]


def run(quick: bool, workdir: Path, redis_url: str, sections: set[str]) -> list[Result]:
    settings = QUICK if quick else FULL
    workdir.mkdir(parents=True, exist_ok=True)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    site = write_noop_plugin(workdir)
    producer = Celery("bench_producer", broker=redis_url)
    results: list[Result] = []
    with Processes() as procs:
        started = {}
        for worker in workers(site, redis_url, workdir):
            log = workdir / f"worker_{worker.key}.log"
            process = procs.start(worker.command, env=worker.env, cwd=worker.cwd, log=log)
            started[worker.key] = (worker, process, log)
        try:
            for worker, process, log in started.values():
                wait_ready(client, producer, worker, process, log)
            all_workers = [w for w, _, _ in started.values()]
            if "throughput" in sections:
                pids = {key: process.pid for key, (_, process, _) in started.items()}
                results += throughput(settings, client, producer, all_workers, pids)
            if "latency" in sections:
                compared = [w for w in all_workers if w.key != "stored"]
                results += latency(settings, client, producer, compared)
        except Exception:
            for _, _, log in started.values():
                print(tail(log))
            raise
        finally:
            producer.close()
    if "latency" in sections:
        results += publish_in_request(settings, redis_url, workdir)
    return results


def wait_ready(
    client: redis.Redis, producer: Celery, worker: Worker, process: Any, log: Path
) -> None:
    """Send one task and wait for it: the worker is up and warm."""
    client.delete(LATENCY)
    producer.send_task(TASK, kwargs={"sent": time.time(), "tag": worker.key}, queue=worker.queue)

    def done() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{worker.label} exited {process.returncode}:\n{tail(log)}")
        return bool(client.llen(LATENCY))

    wait_for(done, 90, f"the {worker.label} to run its first task")
    client.delete(LATENCY)


def drain(
    client: redis.Redis, producer: Celery, worker: Worker, count: int, pid: int
) -> tuple[float, float]:
    """Queue ``count`` tasks for ``worker`` (process ``pid``) at once; return tasks/s
    and the worker's CPU seconds (main process and pool) per task."""
    client.delete(TIMES, STAGING)
    with producer.producer_or_acquire() as publisher:
        for _ in range(count):
            producer.send_task(TASK, queue=STAGING, producer=publisher)
    if client.llen(STAGING) != count:
        raise RuntimeError(f"staged {client.llen(STAGING)} of {count} tasks")
    cpu_before = tree_cpu_seconds(pid)
    client.rename(STAGING, worker.queue)
    deadline = time.monotonic() + 300
    while client.llen(TIMES) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{worker.label} ran {client.llen(TIMES)} of {count} tasks")
        time.sleep(0.05)
    cpu = tree_cpu_seconds(pid) - cpu_before
    stamps = [tuple(map(float, raw.split())) for raw in client.lrange(TIMES, 0, -1)]
    first_start = min(start for start, _ in stamps)
    last_end = max(end for _, end in stamps)
    return count / (last_end - first_start), cpu / count


def throughput(
    settings: Settings,
    client: redis.Redis,
    producer: Celery,
    all_workers: list[Worker],
    pids: dict[str, int],
) -> list[Result]:
    rates: dict[str, list[float]] = {w.key: [] for w in all_workers}
    cpus: dict[str, list[float]] = {w.key: [] for w in all_workers}
    for round_ in range(settings.rounds):
        # ABCDDCBA, starting one worker further each round: every worker is measured
        # twice per round, on both sides of the others, so a neighbour's load that
        # rises or falls during the round weighs on all of them alike.
        shift = round_ % len(all_workers)
        order = all_workers[shift:] + all_workers[:shift]
        seconds = {w.key: 0.0 for w in all_workers}
        cpu_seconds = {w.key: 0.0 for w in all_workers}
        for worker in [*order, *reversed(order)]:
            rate, cpu = drain(client, producer, worker, settings.tasks, pids[worker.key])
            seconds[worker.key] += settings.tasks / rate
            cpu_seconds[worker.key] += cpu * settings.tasks
        for key in rates:
            rates[key].append(2 * settings.tasks / seconds[key])
            cpus[key].append(cpu_seconds[key] / (2 * settings.tasks))

    def ratios(values: dict[str, list[float]], a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(values[a], values[b], strict=True)]

    core_vs_bare = ratios(rates, "core", "bare")
    core_vs_tuned = ratios(rates, "core", "tuned")
    tuned_vs_bare = ratios(rates, "tuned", "bare")
    stored_vs_core = ratios(rates, "stored", "core")
    med = {key: median(values) for key, values in rates.items()}
    cpu = {key: median(values) for key, values in cpus.items()}
    cpu_ratio = ratios(cpus, "core", "bare")
    calls = run_json([PYTHON, str(BENCH_DIR / "task_call_probe.py")], cwd=REPO, timeout=300)
    wrapper = median([w - b for w, b in zip(calls["wrapped"], calls["bare"], strict=True)])
    how = (
        f"{settings.rounds} rounds, each measuring every worker twice in ABCDDCBA order "
        f"(rotated each round) on {settings.tasks} queued no-op tasks, {' '.join(POOL)}, "
        "first task start to last task end"
    )
    return [
        Result(
            "Worker throughput: python run.py worker / bare Celery worker",
            median(core_vs_bare),
            ">= 0.95",
            f"median tasks/s core_app {med['core']:.0f}, bare Celery {med['bare']:.0f}; "
            f"per-round ratios {spread(core_vs_bare)} (quartiles {quartiles(core_vs_bare)}); "
            f"{how}; the host's defaults (late acknowledgement, prefetch 4, Redis result "
            "backend), the no-op's result ignored as its plugin declares",
            "4 worker throughput",
        ),
        Result(
            "Worker CPU per task: python run.py worker / bare Celery worker",
            median(cpu_ratio),
            None,
            f"CPU time of the worker (main process and pool) per task: core_app "
            f"{ms(cpu['core'])}, bare {ms(cpu['bare'])}, bare + core_app delivery settings "
            f"{ms(cpu['tuned'])}, core_app storing results {ms(cpu['stored'])}; per-round "
            f"ratios {spread(cpu_ratio)}; core_app / bare + core_app settings "
            f"{median(ratios(cpus, 'core', 'tuned')):.3f} (the host's own share)",
            "4 worker throughput",
        ),
        Result(
            "Worker throughput: run.py worker / bare Celery with core_app's delivery settings",
            median(core_vs_tuned),
            None,
            f"median tasks/s bare Celery + core_app settings {med['tuned']:.0f}; per-round "
            f"ratios {spread(core_vs_tuned)} (quartiles {quartiles(core_vs_tuned)}): the "
            "host's own share of the gap (the Flask app context around each task)",
            "4 worker throughput",
        ),
        Result(
            "Worker throughput: bare Celery with core_app's delivery settings / bare Celery",
            median(tuned_vs_bare),
            None,
            f"per-round ratios {spread(tuned_vs_bare)} (quartiles {quartiles(tuned_vs_bare)}): "
            "the share of the gap due to the delivery settings (late acknowledgement, "
            "prefetch 4, visibility timeout and sweeps, a result backend the no-op does "
            "not write to)",
            "4 worker throughput",
        ),
        Result(
            "Host's work around each task: its CPU time / the worker's CPU time per task",
            wrapper / cpu["core"],
            None,
            f"calling a task as the worker's tracer does (the host's task class: the Flask "
            f"app context and what runs when it ends) costs {wrapper * 1e6:.1f} us more than "
            f"calling its function, against {ms(cpu['core'])} of worker CPU per no-op task; "
            f"in-process CPU time, {len(calls['wrapped'])} alternating rounds of 100000 calls "
            "(benchmarks/task_call_probe.py)",
            "4 worker throughput",
        ),
        Result(
            "Worker throughput: run.py worker storing every result / ignoring the no-op's",
            median(stored_vs_core),
            None,
            f"median tasks/s storing results {med['stored']:.0f}, core_app {med['core']:.0f}; "
            f"per-round ratios {spread(stored_vs_core)} (quartiles "
            f"{quartiles(stored_vs_core)}): what core_app_task_options' ignore_result "
            "saves (a result-backend write per task)",
            "4 worker throughput",
        ),
    ]


def latency(
    settings: Settings, client: redis.Redis, producer: Celery, all_workers: list[Worker]
) -> list[Result]:
    samples: dict[str, list[float]] = {w.key: [] for w in all_workers}
    client.delete(LATENCY)
    count = len(all_workers)
    with producer.producer_or_acquire() as publisher:
        for round_ in range(settings.latency_tasks):
            shift = round_ % count
            for worker in all_workers[shift:] + all_workers[:shift]:
                producer.send_task(
                    TASK,
                    kwargs={"sent": time.time(), "tag": worker.key},
                    queue=worker.queue,
                    producer=publisher,
                )
                popped = client.blpop([LATENCY], timeout=30)
                if popped is None:
                    raise TimeoutError(f"{worker.label} did not run a latency task in 30 s")
                tag, value = popped[1].decode().split()
                samples[tag].append(float(value))
    core, bare, tuned = samples["core"], samples["bare"], samples["tuned"]
    how = (
        f"{settings.latency_tasks} tasks per worker, sent one at a time, rotating between "
        f"the workers, {' '.join(POOL)}; latency = task start - send time (clocks of one "
        "machine)"
    )
    return [
        Result(
            "Task end-to-end latency p50: core_app worker / bare Celery worker",
            median(core) / median(bare),
            None,
            f"p50 core_app {ms(median(core))}, bare {ms(median(bare))}, bare + core_app "
            f"delivery settings {ms(median(tuned))}; {how}",
            "5 latency",
        ),
        Result(
            "Task end-to-end latency p99: core_app worker / bare Celery worker",
            percentile(core, 99) / percentile(bare, 99),
            None,
            f"p99 core_app {ms(percentile(core, 99))}, bare {ms(percentile(bare, 99))}, "
            f"bare + core_app delivery settings {ms(percentile(tuned, 99))}",
            "5 latency",
        ),
    ]


def publish_in_request(settings: Settings, redis_url: str, workdir: Path) -> list[Result]:
    data = run_json(
        [
            PYTHON,
            str(BENCH_DIR / "publish_probe.py"),
            "--rounds",
            str(settings.publish_rounds),
            "--requests",
            str(settings.publish_requests),
        ],
        env={
            "CORE_APP_BROKER_URL": redis_url,
            "CORE_APP_INSTANCE_PATH": str(workdir / "publish_instance"),
            "CORE_APP_PLUGINS": "shop,notifications",
            "CORE_APP_PLUGIN_ERRORS": "raise",
        },
        cwd=REPO,
        timeout=300,
    )
    results = []
    bare = data.pop("bare")
    bare_p50 = [median(r) for r in bare]
    for route, rounds in data.items():
        shares = [median(r["publish"]) / median(r["request"]) for r in rounds]
        publish = [x for r in rounds for x in r["publish"]]
        request = [x for r in rounds for x in r["request"]]
        results.append(
            Result(
                f"Publish share of request time: {route}",
                median(shares),
                None,
                f"publish (Celery send_task inside the view) p50 {ms(median(publish))}, p99 "
                f"{ms(percentile(publish, 99))}; whole request (Flask test client) p50 "
                f"{ms(median(request))}, p99 {ms(percentile(request, 99))}; "
                f"{len(rounds)} rounds x {settings.publish_requests} requests, "
                f"per-round shares {spread(shares)}; broker: local redis-server",
                "5 latency",
            )
        )
        if "apply_async" in route:
            core_p50 = [median(r["publish"]) for r in rounds]
            ratios = [c / b for c, b in zip(core_p50, bare_p50, strict=True)]
            all_bare = [x for r in bare for x in r]
            results.append(
                Result(
                    "Publish time p50: apply_async in a core_app request / bare Celery send_task",
                    median(ratios),
                    None,
                    f"bare Celery(broker=redis) publishing the same message outside a "
                    f"request: p50 {ms(median(all_bare))}, p99 {ms(percentile(all_bare, 99))}; "
                    f"per-round ratios {spread(ratios)}; the difference is the Redis result "
                    "backend: a SUBSCRIBE to the result channel before publishing a task "
                    "whose result is stored (send_email's is, for its status URL)",
                    "5 latency",
                )
            )
    return results
