"""One start-up measurement, in a fresh process of the benchmark's virtualenv.

    python startup_child.py core PLUGINS_FILE INSTANCE [--twice] [--disable-all-but-one]
                                                       [--no-cache]
    python startup_child.py hand PLUGINS_FILE INSTANCE

Flask and core_app are imported first (the plugins import ``core_app.hookimpl``, so
both ways pay that alike); then the clock runs over ``create_app()`` (core) or over
importing every plugin module and registering its blueprint on a plain Flask app (hand).
Prints one JSON object.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import flask  # noqa: E402

import core_app  # noqa: E402
import core_app.discovery  # noqa: E402

IMPORTED = time.perf_counter()


def main() -> None:
    mode, plugins_file, instance = sys.argv[1:4]
    flags = set(sys.argv[4:])
    with open(plugins_file) as lines:
        names = [line for line in lines.read().split() if line]
    others = [n for n in os.environ.get("BENCH_OTHER_PLUGINS", "").split(",") if n]
    out: dict[str, object] = {"imports_s": IMPORTED - STARTED}
    if mode == "hand":
        cpu, began = time.process_time(), time.perf_counter()
        app = flask.Flask("handwired", instance_path=instance, static_folder=None)
        for name in names:
            module = importlib.import_module(name)
            app.register_blueprint(module.blueprint)
        out["seconds"] = time.perf_counter() - began
        out["cpu_seconds"] = time.process_time() - cpu
        out["rules"] = len(list(app.url_map.iter_rules()))
    else:
        disabled = list(others)
        expected = set(names)
        if "--disable-all-but-one" in flags:
            disabled += names[1:]
            expected = {names[0]}
        config = {
            "INSTANCE_PATH": instance,
            "PLUGIN_ERRORS": "raise",
            "DISABLED_PLUGINS": disabled,
            "DISCOVERY_CACHE": "--no-cache" not in flags,
        }
        cpu, began = time.process_time(), time.perf_counter()
        app = core_app.create_app(config)
        out["seconds"] = time.perf_counter() - began
        out["cpu_seconds"] = time.process_time() - cpu
        out["rules"] = len(list(app.url_map.iter_rules()))
        out["loaded"] = len(app.extensions["core_app"].active(builtins=False))
        imported = sorted(n for n in names if n in sys.modules)
        out["imported"] = len(imported)
        out["unexpected_imports"] = sorted(set(imported) - expected)[:5]
        out["missing_imports"] = sorted(expected - set(imported))[:5]
        out["expected_imports"] = len(expected)
        if "--twice" in flags:
            began = time.perf_counter()
            core_app.create_app(config)
            out["second_seconds"] = time.perf_counter() - began
        out["scan_count"] = core_app.discovery.scan_count
    print(json.dumps(out))


if __name__ == "__main__":
    main()
