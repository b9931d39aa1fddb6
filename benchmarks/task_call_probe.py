"""What the host adds around each task it runs, in CPU time per call.

    python benchmarks/task_call_probe.py --calls 100000

Builds ``create_app()`` for a worker role with no plugin, defines a no-op task on its
Celery app (so it gets the host's task class, which runs each task inside the Flask app
context, as Flask's Celery pattern does), and times calling the task the way a worker's
tracer does (``task(...)``) against calling its function directly (``task.run(...)``),
alternating in rounds. Prints JSON: per round, the CPU seconds per call of each.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable

from core_app import create_app
from core_app.roles import Role


def noop() -> None:
    """The task: nothing, so that only what runs around it is measured."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="core_app_task_call_") as instance:
        app = create_app({"INSTANCE_PATH": instance, "PLUGINS": []}, role=Role.worker([]))
        task = app.extensions["celery"].task(name="bench.call_probe")(noop)

        def per_call(call: Callable[[], object]) -> float:
            started = time.process_time()
            for _ in range(args.calls):
                call()
            return (time.process_time() - started) / args.calls

        wrapped, bare = [], []
        for _ in range(args.rounds):
            wrapped.append(per_call(task))
            bare.append(per_call(task.run))
    print(json.dumps({"wrapped": wrapped, "bare": bare}))


if __name__ == "__main__":
    main()
