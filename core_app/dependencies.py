"""Plugin dependencies: which are missing or incompatible, and the load order.

Order is deterministic: dependencies first, then by name (the host's built-ins first).
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from .errors import PluginDependencyError, PluginError
from .records import PluginRecord


def dependency_error(
    record: PluginRecord, records: Mapping[str, PluginRecord]
) -> PluginError | None:
    """Why ``record``'s declared dependencies are not met, or None when they are."""
    for name, spec in sorted(record.dependencies.items()):
        needed = records.get(name)
        if needed is None or not needed.enabled or needed.failed:
            state = (
                "not installed" if needed is None else ("failed" if needed.failed else "disabled")
            )
            return PluginDependencyError(
                record.name,
                f"it needs plugin {name!r}{spec}, which is {state}.",
                f"install and enable {name!r}, or disable {record.name!r}.",
                other=name,
            )
        try:
            ok = needed.version is None or SpecifierSet(spec).contains(
                needed.version, prereleases=True
            )
        except InvalidSpecifier:
            ok = False
        if not ok:
            return PluginDependencyError(
                record.name,
                f"it needs plugin {name!r}{spec}, but {needed.distribution} "
                f"{needed.version} is installed.",
                f"install a version of {needed.distribution} matching {spec!r}.",
                other=name,
            )
    return None


def load_order(active: Sequence[PluginRecord]) -> list[str]:
    """Names in load order; raises ``graphlib.CycleError`` for a cycle."""
    by_name = {record.name: record for record in active}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, record in by_name.items():
        sorter.add(name, *(d for d in record.dependencies if d in by_name))
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda n: (not by_name[n].builtin, n))
        order.extend(ready)
        sorter.done(*ready)
    return order


def cycle_errors(cycle: Sequence[str]) -> dict[str, PluginError]:
    """One error per plugin in a dependency cycle, each naming the others."""
    return {
        name: PluginDependencyError(
            name,
            f"its dependencies form a cycle: {' -> '.join(cycle)}.",
            "remove one of the dependencies in the cycle.",
            other=", ".join(n for n in cycle if n != name),
        )
        for name in sorted(set(cycle))
    }
