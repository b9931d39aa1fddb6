"""The entry-point scan is kept across processes until a folder on sys.path changes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fakes import blueprint_source

from core_app import discovery
from core_app.discovery import installed_plugins, rescan


def _names(cache: Path) -> set[str]:
    rescan()
    return {source.name for source in installed_plugins(cache)}


def test_a_second_process_reads_the_cache_instead_of_scanning(fake_dist, tmp_path):
    fake_dist("cached", blueprint_source("cached"))
    cache = tmp_path / "instance"
    assert "cached" in _names(cache)
    scans = discovery.scan_count
    assert "cached" in _names(cache)  # a new process would start like this
    assert discovery.scan_count == scans
    assert len(list(cache.glob(".core_app-plugins-*.json"))) == 1


def test_installing_into_a_path_folder_invalidates_the_cache(fake_dist, tmp_path):
    first = fake_dist("early", blueprint_source("early"))
    cache = tmp_path / "instance"
    assert "late_arrival" not in _names(cache)
    # What pip does: a new *.dist-info folder appears in a folder already on sys.path.
    dist_info = first.path / "core_app_fake_late-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: core-app-fake-late\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text("[core_app.plugins]\nlate_arrival = late_mod\n")
    scans = discovery.scan_count
    assert "late_arrival" in _names(cache)
    assert discovery.scan_count == scans + 1


def test_a_damaged_cache_is_ignored(fake_dist, tmp_path):
    fake_dist("sturdy", blueprint_source("sturdy"))
    cache = tmp_path / "instance"
    _names(cache)
    for path in cache.glob(".core_app-plugins-*.json"):
        path.write_text("{not json")
    assert "sturdy" in _names(cache)


def test_run_py_in_a_fresh_process_uses_the_cache(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {"CORE_APP_INSTANCE_PATH": str(tmp_path / "instance"), "PATH": "/usr/bin:/bin"}
    code = "import run, core_app.discovery as d; print(d.scan_count)"
    counts = [
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()[-1]
        for _ in range(2)
    ]
    assert counts == ["1", "0"]
