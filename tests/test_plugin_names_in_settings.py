"""A setting that names a plugin nobody installed is a typo: a warning in development,
a refusal in production; never a host that silently serves no plugin."""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest
from fakes import never_import_source, subprocess_env
from procs import REPO, run_py

from core_app import ConfigError, create_app

SETTINGS = {
    "PLUGINS": ["shopp"],
    "DISABLED_PLUGINS": ["notifcations"],
    "PLUGIN_URL_PREFIXES": {"shopp": "/api/shopp"},
    "PLUGIN_QUEUES": {"notifcations": "mail"},
}


@pytest.mark.parametrize("key", SETTINGS)
def test_an_unknown_plugin_name_is_a_warning_in_development(tmp_path, key, caplog):
    app = create_app({"INSTANCE_PATH": str(tmp_path), key: SETTINGS[key]})
    (warning,) = app.extensions["core_app"].warnings
    typo = "'shopp'" if "shopp" in json.dumps(SETTINGS[key]) else "'notifcations'"
    assert warning.startswith(f"{key} names {typo}, but no such plugin is installed")
    assert "installed: notifications, shop" in warning
    assert warning in caplog.text


@pytest.mark.parametrize("key", SETTINGS)
def test_an_unknown_plugin_name_refuses_production(tmp_path, key):
    with pytest.raises(ConfigError, match=f"^{key} names .* no such plugin is installed"):
        create_app(
            {
                "INSTANCE_PATH": str(tmp_path),
                "ENV": "production",
                "SECRET_KEY": secrets.token_hex(),
                "BROKER_URL": "redis://127.0.0.1:1/0",
                key: SETTINGS[key],
            }
        )


def test_a_typo_in_the_allowlist_stops_production_from_serving_nothing(tmp_path):
    env = subprocess_env(
        tmp_path,
        CORE_APP_ENV="production",
        CORE_APP_SECRET_KEY=secrets.token_hex(),
        CORE_APP_BROKER_URL="redis://127.0.0.1:1/0",
        CORE_APP_PLUGINS="shopp",
    )
    done = subprocess.run(run_py("routes"), cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("core_app refused to start.\n\nPLUGINS names 'shopp'")

    listed = subprocess.run(
        run_py("plugins"),
        cwd=REPO,
        env={**env, "CORE_APP_ENV": "development"},
        text=True,
        capture_output=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert "Warning: PLUGINS names 'shopp'" in listed.stderr
    assert "excluded by PLUGINS" in listed.stdout


def test_the_doctor_honours_the_allowlist_and_shows_the_typo(fake_dist, tmp_path):
    third = fake_dist("third", never_import_source(tmp_path / "third.marker"))
    env = subprocess_env(tmp_path, [third.path], CORE_APP_PLUGINS="shop,notifications,shopp")
    done = subprocess.run(
        run_py("plugins", "check"), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "third.marker").exists(), "an excluded plugin was imported"
    assert "third (" in done.stdout and "excluded by PLUGINS" in done.stdout
    assert "(settings): WARNING\n  PLUGINS names 'shopp'" in done.stdout

    everything = subprocess.run(
        run_py("plugins", "check", "--all"), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert everything.returncode == 1
    assert (tmp_path / "third.marker").exists(), "--all checks excluded plugins too"
