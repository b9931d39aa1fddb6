"""Find installed plugins from package metadata, without importing them.

The entry points of the group ``core_app.plugins`` are read once per process and kept:
building a second app (tests, a worker beside the web app) costs no second scan. All
that can be decided from metadata (names, duplicates, allowlists, host version) is
decided here, so that a plugin that is not wanted is never imported.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import importlib_metadata
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from .errors import PluginVersionError

ENTRY_POINT_GROUP = "core_app.plugins"
HOST_DISTRIBUTION = "core-app"

#: How many times this process has scanned the entry points (the benchmarks read it).
scan_count = 0


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin comes from: an installed entry point, or an object given directly."""

    name: str
    target: str
    distribution: str | None = None
    version: str | None = None
    #: The ``core-app`` specifier from the distribution's ``Requires-Dist``, if any.
    host_requirement: str | None = None
    entry_point: importlib_metadata.EntryPoint | None = None
    obj: object | None = None

    def load(self) -> object:
        """Import the plugin (the entry point's target, or the object given)."""
        if self.entry_point is None:
            return self.obj
        return self.entry_point.load()


@functools.cache
def installed_plugins() -> tuple[PluginSource, ...]:
    """Every plugin advertised by an installed distribution, sorted by name."""
    global scan_count
    scan_count += 1
    sources = [_source(ep) for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP)]
    return tuple(sorted(sources, key=lambda s: (s.name, s.distribution or "")))


def rescan() -> None:
    """Forget the cached scan, for tests that install or fake distributions."""
    installed_plugins.cache_clear()


def _source(ep: importlib_metadata.EntryPoint) -> PluginSource:
    dist = ep.dist
    if dist is None:
        return PluginSource(name=ep.name, target=ep.value, entry_point=ep)
    # dist.name, dist.version and dist.requires each read and parse METADATA again;
    # parse it once (a third of discovery's cost with hundreds of plugins installed).
    metadata = dist.metadata
    requires = metadata.get_all("Requires-Dist") or dist.requires or []
    return PluginSource(
        name=ep.name,
        target=ep.value,
        distribution=metadata["Name"],
        version=metadata["Version"],
        host_requirement=_host_requirement(requires),
        entry_point=ep,
    )


def _host_requirement(requires: list[str]) -> str | None:
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) != HOST_DISTRIBUTION:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        return str(req.specifier)
    return None


@functools.cache
def host_version() -> str:
    """The installed version of core-app."""
    return importlib_metadata.version(HOST_DISTRIBUTION)


def check_host_version(source: PluginSource) -> None:
    """Refuse a plugin whose ``core-app`` requirement excludes the running host."""
    if not source.host_requirement:
        return
    running = host_version()
    if SpecifierSet(source.host_requirement).contains(running, prereleases=True):
        return
    raise PluginVersionError(
        source.name,
        f"it requires core-app{source.host_requirement}, but this host is core-app {running}.",
        f"install a release of {source.distribution} that supports core-app {running}, "
        f"or install core-app{source.host_requirement}.",
        distribution=source.distribution,
        version=source.version,
    )
