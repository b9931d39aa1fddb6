"""The doctor: check every installed plugin before it reaches production.

Each plugin is built into an app of its own, in a process of its own, so one plugin's
failure (or slow import, or side effect) cannot hide another's; then all enabled plugins
are built together to find conflicts between them. ``python run.py plugins check`` and
``python -m core_app.doctor`` (which works even when the app refuses to start) run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .app import create_app
from .discovery import check_host_version, host_version, installed_plugins
from .errors import CoreAppError, PluginDependencyError, PluginError
from .plugins import PluginHost
from .records import FAILED, LOADED

#: Seconds one plugin may take to build an app alone before the doctor gives up on it.
INSPECT_TIMEOUT = 120


def inspect_plugins(names: Sequence[str] | None) -> list[dict[str, Any]]:
    """Build an app with ``names`` (None: every enabled plugin) and describe each plugin."""
    with tempfile.TemporaryDirectory(prefix="core-app-doctor-") as instance:
        config: dict[str, Any] = {"PLUGIN_ERRORS": "skip", "INSTANCE_PATH": instance}
        if names is not None:
            config["PLUGINS"] = list(names)
        try:
            app = create_app(config)
        except CoreAppError as error:
            return [{"name": "(host)", "status": FAILED, "error": str(error)}]
        host: PluginHost = app.extensions["core_app"]
        return [_describe(host, record.name) for record in host.plugins()]


def _describe(host: PluginHost, name: str) -> dict[str, Any]:
    record = host.records[name]
    report = record.as_dict()
    report.update(
        import_ms=round(record.import_seconds * 1000, 1),
        hooks=host.implemented_hooks(name),
        config_keys=record.config_keys,
        dependencies=record.dependencies,
        requires_core_app=record.source.host_requirement or "",
        compatible=_compatible(record.source),
        error_detail=record.error.as_dict() if record.error else None,
    )
    return report


def _compatible(source: Any) -> bool:
    try:
        check_host_version(source)
    except PluginError:
        return False
    return True


def _inspect_in_subprocess(name: str | None) -> list[dict[str, Any]]:
    command = [sys.executable, "-m", "core_app.doctor", "--inspect", *([name] if name else [])]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=os.environ.copy(), timeout=INSPECT_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return [
            {
                "name": name or "(host)",
                "status": FAILED,
                "error": f"building an app with it did not finish within {INSPECT_TIMEOUT} s "
                "(a hang at import or in a hook).",
            }
        ]
    try:
        return list(json.loads(done.stdout))
    except ValueError:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return [{"name": name or "(host)", "status": FAILED, "error": tail[0]}]


def check() -> list[dict[str, Any]]:
    """Every installed plugin alone, then all together; one report per plugin."""
    names = sorted({source.name for source in installed_plugins()})
    with ThreadPoolExecutor(max_workers=4) as pool:
        alone = list(pool.map(_inspect_in_subprocess, names))
        together = pool.submit(_inspect_in_subprocess, None).result()
    reports = {
        n: next((r for r in rows if r["name"] == n), None)
        for n, rows in zip(names, alone, strict=True)
    }
    result = []
    for name in names:
        report = reports[name] or {"name": name, "status": FAILED, "error": "not reported"}
        combined = next((r for r in together if r["name"] == name), None)
        if _needs_others(report) and combined and combined["status"] == LOADED:
            # Alone, its dependencies are left out by construction; together they load.
            report = combined
        elif report["status"] != FAILED and combined and combined["status"] == FAILED:
            report = {
                **report,
                "status": FAILED,
                "error": combined["error"],
                "error_detail": combined.get("error_detail"),
            }
        result.append(report)
    result += [r for r in together if r["name"] == "(host)"]
    return result


def _needs_others(report: dict[str, Any]) -> bool:
    """Whether the report is a failure only because other plugins were left out."""
    detail = report.get("error_detail") or {}
    return report["status"] == FAILED and detail.get("kind") == PluginDependencyError.kind


def format_report(reports: list[dict[str, Any]]) -> str:
    lines = [
        f"core-app {host_version()}: checking {len(reports)} plugin(s), each alone, then together."
    ]
    for r in reports:
        origin = f"{r.get('distribution')} {r.get('version')}"
        lines.append(
            f"\n{r['name']} ({origin}): {'OK' if r['status'] != FAILED else 'FAILED'}"
            + (f" [{r['status']}: {r['reason']}]" if r["status"] == "disabled" else "")
        )
        if r["status"] == FAILED:
            lines.append(f"  {r['error']}")
            continue
        lines.append(f"  import: {r['import_ms']} ms; hooks: {', '.join(r['hooks']) or 'none'}")
        lines.append(f"  routes: {r['routes']} under {r['url_prefix'] or '-'}")
        lines.append(f"  tasks on queue {r['queue'] or '-'}: {', '.join(r['tasks']) or 'none'}")
        lines.append(f"  config: {', '.join(r['config_keys']) or 'none'}")
        lines.append(
            f"  requires core-app{r['requires_core_app'] or ' (any)'}: "
            f"{'compatible' if r['compatible'] else 'INCOMPATIBLE'}"
        )
    problems = sum(r["status"] == FAILED for r in reports)
    lines.append(f"\n{len(reports)} checked, {problems} with problems.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--inspect"]:
        print(json.dumps(inspect_plugins(args[1:] or None), default=str))
        return 0
    reports = check()
    print(
        json.dumps(reports, indent=2, default=str) if "--json" in args else format_report(reports)
    )
    return 1 if any(r["status"] == FAILED for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
