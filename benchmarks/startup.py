"""Benchmark 2: start-up cost as the number of installed plugins grows.

For each N, a throwaway virtualenv (``core_app.testing.child_venv``, so core_app and
Flask come from the running environment) gets N generated plugin distributions, written
the way pip leaves them: a package and a ``*.dist-info`` folder with METADATA,
entry_points.txt and an empty RECORD. Each plugin is a module with one blueprint holding
one route, and a ``core_app_blueprint`` hook returning it.

Each measurement is a fresh process of that venv (``startup_child.py``): ``create_app()``
against importing the same modules and registering the same blueprints by hand,
alternating A/B and B/A; the figure is the median of the per-pair ratios of CPU time
(wall-clock ratios are in the detail: on a shared machine they mostly measure the
neighbours).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    Result,
    make_venv,
    median,
    ms,
    other_installed_plugins,
    run_json,
    spread,
    write_distribution,
)

PLUGIN_SOURCE = '''"""Generated benchmark plugin {name}: one blueprint with one route."""

from flask import Blueprint

from core_app import hookimpl

blueprint = Blueprint("{name}", __name__, url_prefix="/api/{name}")


@blueprint.get("/")
def index():
    return {{"plugin": "{name}"}}


@hookimpl
def core_app_blueprint(app):
    return blueprint
'''


@dataclass
class Settings:
    sizes: list[int]
    repetitions: int


QUICK = Settings([1, 10, 100], 5)
FULL = Settings([1, 10, 100, 300], 9)
TARGET_SIZE = 300


def plugin_name(i: int) -> str:
    return f"benchplug_{i:04d}"


def build_venv(root: Path, size: int) -> tuple[str, Path]:
    """A venv with ``size`` generated plugins; returns its python and the names file."""
    if root.exists():
        shutil.rmtree(root)
    python, site = make_venv(root)
    names = [plugin_name(i) for i in range(size)]
    for name in names:
        write_distribution(
            site,
            distribution=f"core-app-{name.replace('_', '-')}",
            package=name,
            files={"__init__.py": PLUGIN_SOURCE.format(name=name)},
            entry_points={name: name},
        )
    names_file = root / "plugins.txt"
    names_file.write_text("\n".join(names) + "\n")
    return python, names_file


def child(python: str, mode: str, names: Path, instance: Path, *flags: str) -> dict[str, Any]:
    others = ",".join(other_installed_plugins())
    began = time.perf_counter()
    out: dict[str, Any] = run_json(
        [python, str(BENCH_DIR / "startup_child.py"), mode, str(names), str(instance), *flags],
        env={"BENCH_OTHER_PLUGINS": others, "PYTHONDONTWRITEBYTECODE": ""},
        timeout=180,
    )
    out["process_s"] = time.perf_counter() - began
    return out


def run(quick: bool, workdir: Path) -> list[Result]:
    settings = QUICK if quick else FULL
    results: list[Result] = []
    medians: dict[int, dict[str, float]] = {}
    largest = max(settings.sizes)
    largest_env: tuple[str, Path] | None = None
    for size in settings.sizes:
        python, names = build_venv(workdir / f"venv_{size}", size)
        instance = workdir / f"instance_{size}"
        for mode in ("core", "hand"):  # warm-up: bytecode and the file cache
            check(child(python, mode, names, instance), mode, size)
        runs: dict[str, list[dict[str, Any]]] = {"core": [], "hand": []}
        for rep in range(settings.repetitions):
            order = ["core", "hand"] if rep % 2 == 0 else ["hand", "core"]
            for mode in order:
                runs[mode].append(check(child(python, mode, names, instance), mode, size))
        pairs = list(zip(runs["core"], runs["hand"], strict=True))
        ratios = [c["cpu_seconds"] / h["cpu_seconds"] for c, h in pairs]
        wall = [c["seconds"] / h["seconds"] for c, h in pairs]
        process = [c["process_s"] / h["process_s"] for c, h in pairs]
        medians[size] = {m: median([r["cpu_seconds"] for r in runs[m]]) for m in runs}
        is_target = size == TARGET_SIZE or (size == largest and TARGET_SIZE not in settings.sizes)
        note = "" if size == TARGET_SIZE or not is_target else "; --quick: target read at N=100"
        results.append(
            Result(
                f"Start-up with {size} plugins: create_app() / hand-wired registration",
                median(ratios),
                "<= 1.2" if is_target else None,
                f"CPU time create_app {ms(medians[size]['core'])}, hand-wired "
                f"{ms(medians[size]['hand'])}; per-pair ratios {spread(ratios)}; "
                f"wall-clock ratio {median(wall):.3f}; whole process (interpreter, "
                f"imports, exit) wall ratio {median(process):.3f}; "
                f"{settings.repetitions} alternating pairs of fresh processes{note}",
                "2 start-up",
            )
        )
        if size == largest:
            largest_env = (python, names)
            results.append(cold_start(python, names, instance, size, settings.repetitions))
    results.append(slope(medians))
    assert largest_env is not None
    results += discovery_checks(*largest_env, workdir / "instance_checks", largest)
    return results


def cold_start(python: str, names: Path, instance: Path, size: int, reps: int) -> Result:
    """create_app() that scans entry points and reads every METADATA (DISCOVERY_CACHE off),
    as the first process after an install does, against hand-wired registration."""
    runs: dict[str, list[dict[str, Any]]] = {"core": [], "hand": []}
    for rep in range(reps):
        for mode in ["core", "hand"] if rep % 2 == 0 else ["hand", "core"]:
            flags = ("--no-cache",) if mode == "core" else ()
            runs[mode].append(check(child(python, mode, names, instance, *flags), mode, size))
    pairs = list(zip(runs["core"], runs["hand"], strict=True))
    ratios = [c["cpu_seconds"] / h["cpu_seconds"] for c, h in pairs]
    return Result(
        f"Start-up with {size} plugins, no discovery cache: create_app() / hand-wired",
        median(ratios),
        None,
        f"CPU time create_app {ms(median([c['cpu_seconds'] for c, _ in pairs]))}, hand-wired "
        f"{ms(median([h['cpu_seconds'] for _, h in pairs]))}; per-pair ratios {spread(ratios)}; "
        f"the first process after a pip install or uninstall pays this once",
        "2 start-up",
    )


def check(out: dict[str, Any], mode: str, size: int) -> dict[str, Any]:
    host_rules = 3  # /health, /ready, /plugins
    expected = size + (host_rules if mode == "core" else 0)
    if out["rules"] != expected:
        raise RuntimeError(f"{mode} with {size} plugins mounted {out['rules']} routes: {out}")
    return out


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares line through (N, seconds): (seconds per plugin, fixed seconds)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    return slope, mean_y - slope * mean_x


def slope(medians: dict[int, dict[str, float]]) -> Result:
    core = fit([(n, m["core"]) for n, m in medians.items()])
    hand = fit([(n, m["hand"]) for n, m in medians.items()])
    return Result(
        "Start-up marginal cost per plugin: create_app() / hand-wired (slope)",
        core[0] / hand[0],
        None,
        f"least-squares slope over N={', '.join(map(str, medians))}: core_app "
        f"{ms(core[0])} per plugin + {ms(core[1])} fixed, hand-wired {ms(hand[0])} per "
        f"plugin + {ms(hand[1])} fixed",
        "2 start-up",
    )


def discovery_checks(python: str, names: Path, instance: Path, size: int) -> list[Result]:
    twice = child(python, "core", names, instance, "--twice")
    scans = twice["scan_count"]
    only_one = child(python, "core", names, instance, "--disable-all-but-one")
    unexpected, missing = only_one["unexpected_imports"], only_one["missing_imports"]
    ok = not unexpected and not missing
    return [
        Result(
            "Entry-point scans after two create_app() calls in one process",
            float(scans),
            "<= 1",
            f"core_app.discovery.scan_count = {scans} with {size} plugins installed (0 when "
            "the instance folder's discovery cache is valid); first "
            f"create_app {ms(twice['seconds'])}, second {ms(twice['second_seconds'])} (wall)",
            "2 start-up",
        ),
        Result(
            "Disabled plugins not imported: plugin modules imported / expected (1)",
            only_one["imported"] / only_one["expected_imports"] if ok else 0.0,
            "== 1",
            f"CORE_APP_DISABLED_PLUGINS lists {size - 1} of the {size} generated plugins: "
            f"{only_one['imported']} plugin module(s) in sys.modules after create_app "
            f"(expected only {names.read_text().split()[0]}); "
            f"unexpected {unexpected or 'none'}, missing {missing or 'none'}; "
            f"create_app {ms(only_one['seconds'])} (wall)",
            "2 start-up",
        ),
    ]
