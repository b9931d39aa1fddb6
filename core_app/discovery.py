"""Find installed plugins from package metadata, without importing them.

The entry points of the group ``core_app.plugins`` are read once per process and kept:
building a second app (tests, a worker beside the web app) costs no second scan. Across
processes, the result is kept in a small cache file in the instance folder, valid while
no folder on ``sys.path`` changes (pip adds or removes a ``*.dist-info`` folder there on
every install, upgrade and uninstall): reading hundreds of distributions' metadata is
most of the start-up cost of a host with many plugins. All that can be decided from
metadata (names, duplicates, allowlists, host version) is decided here, so that a plugin
that is not wanted is never imported.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import importlib_metadata
from packaging.specifiers import SpecifierSet

from .errors import PluginVersionError

ENTRY_POINT_GROUP = "core_app.plugins"
HOST_DISTRIBUTION = "core-app"
CACHE_FORMAT = 1

#: How many times this process has scanned the entry points (the benchmarks read it).
scan_count = 0
_scanned: tuple[PluginSource, ...] | None = None


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin comes from: an installed entry point, or an object given directly."""

    name: str
    target: str
    distribution: str | None = None
    version: str | None = None
    #: The ``core-app`` specifier from the distribution's ``Requires-Dist``, if any.
    host_requirement: str | None = None
    obj: object | None = None

    def load(self) -> object:
        """Import the plugin (the entry point's target, or the object given)."""
        if self.obj is not None:
            return self.obj
        return importlib_metadata.EntryPoint(self.name, self.target, ENTRY_POINT_GROUP).load()


def installed_plugins(cache_dir: str | Path | None = None) -> tuple[PluginSource, ...]:
    """Every plugin advertised by an installed distribution, sorted by name.

    :param cache_dir: folder of the cross-process cache file; None reads no cache.
    """
    global _scanned
    if _scanned is None:
        cache = Path(cache_dir) / _cache_name() if cache_dir else None
        _scanned = _read_cache(cache) if cache else None
        if _scanned is None:
            _scanned = _scan()
            if cache:
                _write_cache(cache, _scanned)
    return _scanned


def rescan() -> None:
    """Forget this process's scan, for tests that install or fake distributions."""
    global _scanned
    _scanned = None


def _scan() -> tuple[PluginSource, ...]:
    global scan_count
    scan_count += 1
    sources = [_source(ep) for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP)]
    return tuple(sorted(sources, key=lambda s: (s.name, s.distribution or "")))


def _source(ep: importlib_metadata.EntryPoint) -> PluginSource:
    dist = ep.dist
    if dist is None:
        return PluginSource(name=ep.name, target=ep.value)
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
    )


def _cache_name() -> str:
    """One cache file per sys.path, so run.py, gunicorn and celery do not evict each other."""
    digest = hashlib.sha256(json.dumps(sys.path).encode()).hexdigest()[:16]
    return f".core_app-plugins-{digest}.json"


def _path_signature() -> list[Any]:
    """What invalidates the cache: every sys.path folder and its modification time."""
    signature: list[Any] = [CACHE_FORMAT, sys.version, host_version()]
    for entry in sys.path:
        try:
            signature.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            signature.append([entry, None])
    return signature


def _read_cache(cache: Path) -> tuple[PluginSource, ...] | None:
    try:
        data = json.loads(cache.read_text())
        if data["signature"] != _path_signature():
            return None
        return tuple(PluginSource(**fields) for fields in data["plugins"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(cache: Path, sources: tuple[PluginSource, ...]) -> None:
    """Write atomically, so processes starting together never read half a file."""
    data = {"signature": _path_signature(), "plugins": [asdict(s) for s in sources]}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=cache.parent, prefix=cache.name)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        os.replace(temporary, cache)
    except OSError:
        pass  # a read-only instance folder only costs the next process a scan


def _host_requirement(requires: list[str]) -> str | None:
    # Imported here: only a scan parses requirements, and most starts read the cache.
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

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


@functools.cache
def _accepts(specifier: str, version: str) -> bool:
    """Parsed once per specifier: most plugins share the same few ranges."""
    return SpecifierSet(specifier).contains(version, prereleases=True)


def check_host_version(source: PluginSource) -> None:
    """Refuse a plugin whose ``core-app`` requirement excludes the running host."""
    if not source.host_requirement:
        return
    running = host_version()
    if _accepts(source.host_requirement, running):
        return
    raise PluginVersionError(
        source.name,
        f"it requires core-app{source.host_requirement}, but this host is core-app {running}.",
        f"install a release of {source.distribution} that supports core-app {running}, "
        f"or install core-app{source.host_requirement}.",
        distribution=source.distribution,
        version=source.version,
    )
