"""Schema-driven fuzzing: schemathesis against a live gunicorn server, from the document it
serves (``/openapi.json``), with every check but those that assume each schema-valid
request is accepted. Zero failures is the bar; the summary line is printed.

It runs twice: on a development server, and on the production deployment the README gives
(with ``EXPOSE_API_DOCS``), where switched-off routes such as ``/plugins`` answer 404.

Excluded checks and why are listed in EXCLUDED_CHECKS and in docs/testing-the-api.md.
Bodies that no schema describes (raw bytes, form and text bodies) are fuzzed by
test_request_parsing.py; deep nesting and lone surrogates by test_responses.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from procs import Proc, clean_env
from test_deployment import db_upgrade, readme_gunicorn_command, readme_production_env

from core_app.testing import free_port

#: Checks left out, with the reason (docs/testing-the-api.md, "Fuzzing", says the same).
EXCLUDED_CHECKS = {
    # A body that matches its schema can still break a business rule: an address already
    # registered, a purchase for a user that does not exist, a recipient outside
    # NOTIFICATIONS_ALLOWED_RECIPIENTS. Each is a documented 400, not an acceptance.
    "positive_data_acceptance",
}
#: Test cases per operation and phase; with the seed, a run is reproducible.
MAX_EXAMPLES = 30
SEED = 13
#: The whole run's budget (seconds); CI allows the test 3 minutes.
RUN_TIMEOUT = 150


def gunicorn_command(port: int) -> list[str]:
    """The README's gunicorn command line (gthread), bound to a free loopback port."""
    command = readme_gunicorn_command()
    command[command.index("--bind") + 1] = f"127.0.0.1:{port}"
    return [sys.executable, "-m", *command]


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def server_env(deployment: str, tmp_path: Path, redis_url: str) -> dict[str, str]:
    if deployment == "development":
        return clean_env(CORE_APP_BROKER_URL=redis_url, CORE_APP_INSTANCE_PATH=str(tmp_path))
    env = readme_production_env(tmp_path, redis_url, CORE_APP_EXPOSE_API_DOCS="true")
    db_upgrade(env)
    return env


@pytest.mark.parametrize("deployment", ["development", "production"])
def test_schemathesis_finds_no_failure(
    deployment: str, tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = server_env(deployment, tmp_path, redis_url)
    server = Proc(gunicorn_command(port), env, tmp_path / "gunicorn.log")
    server.start(lambda: answers(base + "/openapi.json"))
    try:
        run = subprocess.run(
            [
                *(sys.executable, "-m", "schemathesis.cli", "--no-color", "run"),
                base + "/openapi.json",
                *("--checks", "all", "--exclude-checks", ",".join(sorted(EXCLUDED_CHECKS))),
                *("--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED)),
                *("--generation-database", "none", "--request-timeout", "10"),
                *("--output-truncate", "false"),
            ],
            cwd=tmp_path,  # its reports stay out of the repository
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout + run.stderr + server.tail()
    cases = re.search(r"^ *(\d+ generated, (\d+) passed.*)$", run.stdout, re.MULTILINE)
    assert cases, run.stdout
    final = run.stdout.strip().splitlines()[-1].strip("= ")
    # Each warning and the operations it names: what the summary line only counts.
    section = run.stdout.partition(" WARNINGS ")[2].partition(" SUMMARY ")[0]
    warnings = [line.strip() for line in section.splitlines() if line.strip().strip("=")]
    with capsys.disabled():  # in CI's log, not only on failure
        print(f"\nschemathesis ({deployment}): {cases[1]}; {final}")
        for line in warnings:
            if not line.startswith("💡"):
                print(f"  {line}")
    assert int(cases[2]) >= 100, run.stdout  # it did test something
