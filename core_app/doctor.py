"""The doctor: check every installed plugin before it reaches production.

All enabled plugins are built together, in a process of their own, to find conflicts
between them; then each enabled plugin is built alone, in a process of its own, so one
plugin's failure (or slow import, or side effect) cannot hide another's. A plugin that
``PLUGINS`` / ``DISABLED_PLUGINS`` exclude is not imported unless ``--all`` asks for it.
``python run.py plugins check`` and ``python -m core_app.doctor`` run it; neither builds
an app in its own process, so both work whatever state the plugins are in.
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

#: Report rows that are about the host's settings, not one plugin.
SETTINGS, WARNING = "(settings)", "warning"

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
        settings = [{"name": SETTINGS, "status": WARNING, "error": w} for w in host.warnings]
        return [*(_describe(host, record.name) for record in host.plugins()), *settings]


def _describe(host: PluginHost, name: str) -> dict[str, Any]:
    record = host.records[name]
    with host.app.app_context():  # as_dict counts routes on this app's URL map
        report = record.as_dict()
    report.update(
        import_ms=round(record.import_seconds * 1000, 1),
        hooks=host.implemented_hooks(name),
        config_keys=record.config_keys,
        dependencies=record.dependencies,
        requires_core_app=record.source.host_requirement or "",
        compatible=_compatible(record.source),
        error_detail=record.error.as_dict() if record.error else None,
        excluded=not record.enabled,
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


def check(*, include_excluded: bool = False) -> list[dict[str, Any]]:
    """Every enabled plugin alone, then all together; one report per plugin.

    Plugins that ``PLUGINS`` / ``DISABLED_PLUGINS`` exclude are reported as disabled and
    never imported, unless ``include_excluded`` asks to check them alone too.
    """
    together = _inspect_in_subprocess(None)
    excluded = {r["name"] for r in together if r.get("status") == "disabled" and r.get("excluded")}
    names = sorted({source.name for source in installed_plugins()})
    checked = [n for n in names if include_excluded or n not in excluded]
    with ThreadPoolExecutor(max_workers=4) as pool:
        alone = list(pool.map(_inspect_in_subprocess, checked))
    reports = {
        n: next((r for r in rows if r["name"] == n), None)
        for n, rows in zip(checked, alone, strict=True)
    }
    result = []
    for name in names:
        combined = next((r for r in together if r["name"] == name), None)
        if name not in reports:
            result.append(combined or {"name": name, "status": FAILED, "error": "not reported"})
            continue
        report = reports[name] or {"name": name, "status": FAILED, "error": "not reported"}
        if _needs_others(report) and combined:
            # Alone, its dependencies are left out by construction: the run with all of
            # them says whether they load, and if not, why (a wrong version, a cycle...).
            report = combined
        elif report["status"] != FAILED and combined and combined["status"] == FAILED:
            report = {
                **report,
                "status": FAILED,
                "error": combined["error"],
                "error_detail": combined.get("error_detail"),
            }
        result.append(report)
    result += [r for r in together if r["name"] in ("(host)", SETTINGS)]
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
        if r["status"] == WARNING:
            lines.append(f"\n{r['name']}: WARNING\n  {r['error']}")
            continue
        origin = f"{r.get('distribution')} {r.get('version')}"
        lines.append(
            f"\n{r['name']} ({origin}): {'OK' if r['status'] != FAILED else 'FAILED'}"
            + (f" [{r['status']}: {r['reason']}]" if r["status"] == "disabled" else "")
        )
        if r["status"] == FAILED:
            lines.append(f"  {r['error']}")
        if r["status"] != LOADED:
            continue
        lines.append(f"  import: {r['import_ms']} ms; hooks: {', '.join(r['hooks']) or 'none'}")
        lines.append(
            f"  routes: {r['routes']} under {r['url_prefix'] or '-'} (endpoints x methods)"
        )
        lines.append(f"  app-wide hooks: {', '.join(r.get('app_hooks') or []) or 'none'}")
        lines.append(f"  tasks on queue {r['queue'] or '-'}: {', '.join(r['tasks']) or 'none'}")
        beat = [f"{e['name']} -> {e['task']} ({e['schedule']})" for e in r.get("beat") or []]
        lines.append(f"  beat: {', '.join(beat) or 'none'}")
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
    reports = check(include_excluded="--all" in args)
    print(
        json.dumps(reports, indent=2, default=str) if "--json" in args else format_report(reports)
    )
    return 1 if any(r["status"] == FAILED for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
