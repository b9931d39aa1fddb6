"""Benchmark 8: declared schemas (#13), in one process (``run.py --only api`` runs it).

    python benchmarks/schema_bench.py --rounds 15 --calls 2000 --plugins 300

Validation: one core_app app with a plugin serving the shop's ``POST /users`` checks
twice, without I/O: ``/declared`` through ``@core_app.schema(body=UserIn)`` (the shop's
model), ``/by-hand`` with the same checks written by hand as the shop had them before
#13. Both answer the validated fields. They are called in turns, one request each, and
the CPU time of each is added up; per round the ratio is by-hand time / declared time
(above 1: the declared route is faster), and the figure is the median of the rounds.
A valid body and an invalid one (both fields failing) are measured apart.

Document: ``create_app`` with ``--plugins`` plugins given as objects (each a blueprint of
three routes, one of them declared), then the first ``openapi_document(app)`` (built)
and the second (kept), against ``create_app`` itself: what building it at start-up would
add. Prints JSON.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import statistics
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from common import BENCH_DIR, PYTHON, Result, median, ms, run_json, spread
from core_app_shop.schemas import EMAIL, UNSAFE_CHAR, UserIn
from flask import Blueprint, Flask, request
from werkzeug.test import EnvironBuilder
from wsgi_inprocess import call

from core_app import create_app, hookimpl, json_error, schema
from core_app.openapi import openapi_document

VALID = {"name": "Ann Smith", "email": "ann.smith@example.org"}
INVALID = {"name": "", "email": "ann@example.org\nBcc: x"}

# -- the same checks by hand (the shop's views before #13, with the same regular
# expressions as the shop's validators) ---------------------------------------------


def _text(body: dict[str, Any], field: str, limit: int, errors: dict[str, str]) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        errors[field] = "required, a non-empty string"
        return ""
    if len(value) > limit:
        errors[field] = f"at most {limit} characters"
    elif UNSAFE_CHAR.search(value):
        errors[field] = "must not contain control or line-break characters"
    elif "=?" in value:
        errors[field] = "must not contain '=?' (an encoded word in an email header)"
    return value.strip()


def by_hand() -> Any:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return json_error(400, "Bad Request", "The request body is invalid.", fields={})
    errors: dict[str, str] = {}
    name = _text(body, "name", 100, errors)
    email = _text(body, "email", 254, errors)
    if email and "email" not in errors and not EMAIL.fullmatch(email):
        errors["email"] = "must be one email address, such as ann@example.org"
    if errors:
        return json_error(400, "Bad Request", "The request body is invalid.", fields=errors)
    return {"name": name, "email": email}, 201


@schema(body=UserIn)
def declared(body: UserIn) -> Any:
    return {"name": body.name, "email": body.email}, 201


def validation_app(root: Path) -> Flask:
    blueprint = Blueprint("bench", __name__, url_prefix="/api/bench")
    blueprint.add_url_rule("/declared", view_func=declared, methods=["POST"])
    blueprint.add_url_rule("/by-hand", view_func=by_hand, methods=["POST"])
    return create_app(
        {"INSTANCE_PATH": str(root / "validation"), "PLUGINS": ["bench"], "TESTING": False},
        plugins={"bench": _plugin(blueprint)},
    )


def _plugin(blueprint: Blueprint) -> types.SimpleNamespace:
    @hookimpl
    def core_app_blueprint(app: Flask) -> Blueprint:
        return blueprint

    return types.SimpleNamespace(core_app_blueprint=core_app_blueprint)


def validation(app: Flask, body: dict[str, str], rounds: int, calls: int) -> dict[str, Any]:
    environs = {
        name: EnvironBuilder(
            path=f"/api/bench/{name}", method="POST", json=body, base_url="http://127.0.0.1/"
        ).get_environ()
        for name in ("declared", "by-hand")
    }
    names = list(environs)
    data = json.dumps(body).encode()
    per_round = []
    for round_ in range(rounds + 1):  # the first is a warm-up
        gc.collect()
        statuses: list[str] = []
        spent = dict.fromkeys(names, 0.0)
        for i in range(calls):
            for name in names if i % 2 == 0 else reversed(names):
                started = time.process_time()
                call(app, {**environs[name], "wsgi.input": io.BytesIO(data)}, statuses)
                spent[name] += time.process_time() - started
        if len(set(statuses)) != 1:
            raise SystemExit(f"the two routes answered differently: {sorted(set(statuses))}")
        if round_:
            per_round.append(spent)
    return {
        "status": statuses[0],
        "ratios": [r["by-hand"] / r["declared"] for r in per_round],
        "declared_us": statistics.median(r["declared"] for r in per_round) / calls * 1e6,
        "by_hand_us": statistics.median(r["by-hand"] for r in per_round) / calls * 1e6,
    }


# -- the document for many plugins --------------------------------------------------------


def many_plugins(count: int) -> dict[str, types.SimpleNamespace]:
    plugins = {}
    for index in range(count):
        name = f"p{index:03d}"
        blueprint = Blueprint(name, __name__, url_prefix=f"/api/{name}")
        blueprint.add_url_rule("/home", "home", lambda: {})
        blueprint.add_url_rule("/items/<int:item_id>", "item", lambda item_id: {})
        blueprint.add_url_rule("/users", "create_user", declared, methods=["POST"])
        plugins[name] = _plugin(blueprint)
    return plugins


def document(root: Path, count: int) -> dict[str, Any]:
    plugins = many_plugins(count)
    config = {"INSTANCE_PATH": str(root / "document"), "PLUGINS": list(plugins)}
    gc.collect()
    started = time.perf_counter()
    app = create_app(config, plugins=plugins)
    created = time.perf_counter() - started
    started = time.perf_counter()
    built = openapi_document(app)
    first = time.perf_counter() - started
    started = time.perf_counter()
    again = openapi_document(app)
    second = time.perf_counter() - started
    assert again is built and len(built["tags"]) == count + 1, len(built["tags"])
    return {
        "plugins": count,
        "paths": len(built["paths"]),
        "create_app_s": created,
        "build_s": first,
        "cached_s": second,
        "json_bytes": len(json.dumps(built)),
    }


def run(quick: bool) -> list[Result]:
    """Run this file in a process of its own; its figures as results."""
    rounds, calls = (5, 1000) if quick else (15, 2000)
    command = [PYTHON, str(BENCH_DIR / "schema_bench.py"), "--rounds", str(rounds)]
    data = run_json([*command, "--calls", str(calls), "--plugins", "300"], timeout=900)
    results = []
    for case, what in (("valid", "a valid body (201)"), ("invalid", "an invalid body (400)")):
        found = data[case]
        results.append(
            Result(
                f"Request validation, {what}: declared schema / by hand",
                median(found["ratios"]),
                ">= 0.95" if case == "valid" else None,
                f"CPU time per request declared {found['declared_us']:.0f} us, by hand "
                f"{found['by_hand_us']:.0f} us (the shop's POST /users checks, no I/O, "
                f"both routes of one app called in turns); {rounds} rounds of {calls} "
                f"requests each, per-round ratios {spread(found['ratios'])}",
                "8 declared schemas",
            )
        )
    doc = data["document"]
    results.append(
        Result(
            f"OpenAPI document for {doc['plugins']} plugins: first build / create_app",
            doc["build_s"] / doc["create_app_s"],
            None,
            f"built in {ms(doc['build_s'])} on first use ({doc['paths']} paths, "
            f"{doc['json_bytes'] // 1024} KiB of JSON), then kept: the next call "
            f"{ms(doc['cached_s'])}; create_app with those plugins {ms(doc['create_app_s'])}, "
            "which building it at start-up would add to",
            "8 declared schemas",
        )
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--plugins", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="core_app_schema_") as folder:
        root = Path(folder)
        app = validation_app(root)
        results = {
            "calls": args.calls,
            "valid": validation(app, VALID, args.rounds, args.calls),
            "invalid": validation(app, INVALID, args.rounds, args.calls),
            "document": document(root, args.plugins),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
