"""The baseline worker: a bare Celery app on the same Redis, with the same no-op task.

    celery -A bare_celery worker -Q bench_bare --pool prefork --concurrency 2

``BENCH_BROKER_URL`` names the broker. The task is the very module the generated
``benchnoop`` plugin ships (``benchnoop.tasks``, a plain ``@shared_task``), imported here
so both workers run the same code. With ``BENCH_BARE_SETTINGS=core`` the app also takes
core_app's delivery settings (``core_app.celery_app.delivery_defaults``), the Redis
transport core_app uses (``core_app.redis_transport``), a Redis result backend, and the
no-op's result ignored as the benchnoop plugin declares (stored with
``BENCH_STORE_RESULTS``), to tell the cost of those settings from the cost of the host;
``BENCH_BARE_OVERRIDES`` (JSON) then changes single settings, to find which one costs.
``BENCH_TASK_MODULE`` names another task module to import instead (the worker start-up
benchmark: ``benchplug_0000.tasks``).
"""

from __future__ import annotations

import importlib
import json
import os
from types import SimpleNamespace

from celery import Celery

broker = os.environ["BENCH_BROKER_URL"]
app = Celery("bare", broker=broker)

if os.environ.get("BENCH_BARE_SETTINGS") == "core":
    from core_app.celery_app import REDIS_SCHEMES, delivery_defaults

    settings = delivery_defaults(SimpleNamespace(config={"VISIBILITY_TIMEOUT": 3600}))  # type: ignore[arg-type]
    app.conf.update(settings, result_backend=broker)
    if broker.startswith(REDIS_SCHEMES):  # the transport celery_init_app chooses
        from core_app import redis_transport

        app.conf.broker_transport = redis_transport.NAME
    # What the benchnoop plugin declares in core_app_task_options.
    ignored = not os.environ.get("BENCH_STORE_RESULTS")
    app.conf.task_annotations = {"benchnoop.noop": {"ignore_result": ignored}}
app.conf.update(json.loads(os.environ.get("BENCH_BARE_OVERRIDES", "{}")))

# registers the module's tasks (benchnoop.noop by default) on this app
importlib.import_module(os.environ.get("BENCH_TASK_MODULE", "benchnoop.tasks"))
