"""The newcomer's path, run as written: the README's quick start in a fresh virtualenv
(its own, with nothing but what the quick start installs: no pytest), every request of the
quick start against the server it starts, then the guide's ``new-plugin`` and the Next
line it prints, then the guide's commands from the new plugin's own folder (no run.py
there: ``python -m core_app`` and ``core-app``).

It runs in a copy of the repository's files, so the editable installs write nothing into
the working tree. pip installs from the configured index, as a user's would.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import requests
from procs import REPO, Proc

from core_app.testing import clean_env, free_port, wait_until

README = (REPO / "README.md").read_text()
GUIDE = (REPO / "docs" / "writing-plugins.md").read_text()


def sh_blocks(text: str, heading: str) -> list[str]:
    """The ```sh blocks of the section under ``heading``, backslash continuations joined."""
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return [block.replace("\\\n", " ") for block in blocks]


def copy_repository(target: Path) -> Path:
    """The repository's files, as a fresh clone has them (and new files not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def user_env() -> dict[str, str]:
    """A user's shell: none of the tests' settings, virtualenv or Python path."""
    return {
        key: value
        for key, value in clean_env().items()
        if not key.startswith("COV_") and key != "PYTHONHOME"
    }


def shell(command: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``command`` in bash with the quick start's virtualenv active, as a user types it."""
    script = f". {shlex.quote(str(cwd_root(cwd) / '.venv/bin/activate'))} && {command}"
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cwd_root(cwd: Path) -> Path:
    while not (cwd / ".venv").is_dir():
        cwd = cwd.parent
    return cwd


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def curl(command: str, port: int, task_id: str) -> requests.Response:
    """One of the README's curl lines, sent with requests to the server on ``port``."""
    args = shlex.split(command.replace("<task_id>", task_id), comments=True)
    assert args[0] == "curl", command
    method, data, url = "GET", None, None
    for i, arg in enumerate(args[1:], start=1):
        if arg.startswith("-X"):
            method = arg[2:]
        elif arg == "-d":
            data = args[i + 1]
        elif arg.startswith("localhost:5000"):
            url = "http://" + arg.replace(":5000", f":{port}")
    assert url, command
    headers = {"content-type": "application/json"} if data else {}
    return requests.request(method, url, data=data, headers=headers, timeout=10)


def test_the_readme_quick_start_and_the_guide_run_as_written_in_a_fresh_virtualenv(
    tmp_path, capsys
):
    started = time.monotonic()
    repo = copy_repository(tmp_path / "core_app")
    install, requests_block = sh_blocks(README, "## Quick start")[:2]
    install = install.strip()
    assert install.endswith("&& python run.py"), install
    venv, _, serve = install.partition(" && . .venv/bin/activate && ")
    setup = subprocess.run(
        ["bash", "-c", venv], cwd=repo, env=user_env(), capture_output=True, text=True
    )
    ok(setup)
    ok(shell(serve.removesuffix(" && python run.py"), repo))  # pip install -e . -e plugins/...
    assert shell("python -c 'import pytest'", repo).returncode != 0, "no pytest in the venv"
    installed = time.monotonic()

    # -- python run.py, and every request of the quick start ----------------------------
    port = free_port()
    venv_python = repo / ".venv" / "bin" / "python"
    command = f"cd {shlex.quote(str(repo))} && exec {venv_python} run.py --port {port}"
    web = Proc(["bash", "-c", command], user_env(), tmp_path / "web.log")
    web.start(lambda: _answers(port), timeout=60)
    try:
        task_id = ""
        for line in filter(None, (line.strip() for line in requests_block.splitlines())):
            if line.startswith("ls "):
                outbox = repo / line.split()[1]
                wait_until(functools.partial(_sent, port, task_id), timeout=60)
                assert f"{task_id}.eml" in [p.name for p in outbox.iterdir()]
                continue
            if line.startswith("python run.py"):
                table = ok(shell(line.split("#")[0], repo))
                assert "shop" in table and "notifications" in table
                continue
            response = curl(line, port, task_id)
            assert response.status_code < 300, (line, response.status_code, response.text)
            if "/emails " in line and "XPOST" in line:
                task_id = response.json()["task_id"]
            if "/purchases" in line:
                assert response.json()["receipt"]["status"] == "queued", response.json()
    finally:
        web.stop()
    assert "Traceback" not in web.output()
    assert "No hostname was supplied" not in web.output()
    served = time.monotonic()

    # -- the guide: new-plugin, then the Next line it prints -----------------------------
    (scaffold,) = [b for b in sh_blocks(GUIDE, "## 1. Scaffold it") if "new-plugin" in b]
    wrote = ok(shell(scaffold.strip(), repo))
    next_line = wrote.split("Next: ", 1)[1].strip()
    assert next_line == "pip install -e 'plugins/billing[test]' && python -m pytest plugins/billing"
    tests = ok(shell(next_line, repo, timeout=900))
    generated = (repo / "plugins" / "billing" / "tests").glob("test_*.py")
    count = sum(path.read_text().count("\ndef test_") for path in generated)
    assert count and re.search(rf"\b{count} passed\b", tests), tests
    tested = time.monotonic()

    # -- from the plugin's own folder: no run.py, python -m core_app and core-app ---------
    plugin = repo / "plugins" / "billing"
    listing = json.loads(ok(shell("python -m core_app plugins --json", plugin)))
    billing = {row["name"]: row for row in listing}["billing"]
    assert billing["status"] == "loaded", billing
    assert (billing["distribution"], billing["version"]) == ("core-app-billing", "0.1.0")
    assert billing["url_prefix"] == "/api/billing"
    assert "GET /api/billing/home" in billing["endpoints"], billing
    assert billing["tasks"] == ["billing.echo"] and billing["queue"] == "billing"
    assert "billing" in ok(shell("core-app plugins check", plugin))
    alone = ok(shell("python -m pytest -q", plugin, timeout=900))
    assert re.search(rf"\b{count} passed\b", alone), alone

    with capsys.disabled():
        print(
            f"\nquick start: install {installed - started:.0f} s, serve and requests "
            f"{served - installed:.0f} s, new-plugin + Next line {tested - served:.0f} s, "
            f"plugin folder {time.monotonic() - tested:.0f} s"
        )


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _sent(port: int, task_id: str) -> bool:
    url = f"http://127.0.0.1:{port}/api/notifications/emails/{task_id}"
    body = requests.get(url, timeout=5).json()
    assert body["state"] in ("PENDING", "SUCCESS"), body
    return body["state"] == "SUCCESS"
