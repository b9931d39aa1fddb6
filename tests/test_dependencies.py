"""Plugin dependencies (``core_app_dependencies``): load order, versions, bad declarations.

A dependency that is missing, disabled, of the wrong version or part of a cycle is a
scenario of broken_plugins.py; which plugins a worker imports for its plugin's
dependencies is in test_roles.py.
"""

from __future__ import annotations

import pytest
from fakes import blueprint_source, config, needs_source, ready_recorder_source

from core_app import PluginDeclarationError, PluginDependencyError, create_app


def test_a_plugin_loads_after_the_plugin_it_depends_on(fake_dist, tmp_path):
    def plugin(name: str, **needs: str) -> None:
        body = needs_source(needs) + ready_recorder_source(name)
        fake_dist(name, blueprint_source(name, body=body), version="1.2")

    plugin("base")
    plugin("a_dependent", base=">=1.0")
    plugin("c_loner")
    app = create_app(config(tmp_path, ["a_dependent", "base", "c_loner"], PLUGIN_ERRORS="raise"))
    host = app.extensions["core_app"]
    order = [record.name for record in host.active(builtins=False)]
    # "a_dependent" sorts first by name, yet loads after "base"; then by name, batch by batch.
    assert order == ["base", "c_loner", "a_dependent"], order
    assert host.records["a_dependent"].dependencies == {"base": ">=1.0"}
    # Mounting and the ready notification follow the same order.
    assert [name for name in app.blueprints if name in order] == order
    assert app.extensions["ready_calls"] == order
    client = app.test_client()
    for name in order:
        assert client.get(f"/api/{name}/ping").get_json() == {"plugin": name}


def test_without_dependencies_plugins_load_by_name(fake_dist, tmp_path):
    for name in ("mm", "bb", "kk"):
        fake_dist(name, blueprint_source(name, body=ready_recorder_source(name)))
    app = create_app(config(tmp_path, ["mm", "bb", "kk"], PLUGIN_ERRORS="raise"))
    order = [record.name for record in app.extensions["core_app"].active(builtins=False)]
    assert order == app.extensions["ready_calls"] == ["bb", "kk", "mm"]


def test_a_dependency_of_the_wrong_version_is_an_error_naming_both(fake_dist, tmp_path):
    base = fake_dist("base", blueprint_source("base"), dist_name="core-app-base", version="0.5")
    dependent = fake_dist(
        "a_dependent",
        blueprint_source("a_dependent", body=needs_source({"base": ">=1.0"})),
        dist_name="core-app-dependent",
        version="3.1",
    )
    with pytest.raises(PluginDependencyError) as info:
        create_app(config(tmp_path / "strict", ["base", "a_dependent"], PLUGIN_ERRORS="raise"))
    error = info.value
    assert error.plugin == "a_dependent" and error.other == "base"
    message = str(error)
    assert f"Plugin 'a_dependent' (distribution {dependent.name} {dependent.version})" in message
    assert "'base'>=1.0" in message, message
    assert f"{base.name} {base.version}" in message, message
    assert "Fix:" in message

    app = create_app(config(tmp_path / "lenient", ["base", "a_dependent"], PLUGIN_ERRORS="skip"))
    statuses = {r.name: r.status for r in app.extensions["core_app"].plugins()}
    assert statuses["a_dependent"] == "failed" and statuses["base"] == "loaded"
    client = app.test_client()
    assert client.get("/api/base/ping").status_code == 200
    assert client.get("/api/a_dependent/ping").status_code == 404


@pytest.mark.parametrize("returned", ['["other"]', '{"other": 1}', '"other"'])
def test_a_declaration_that_is_not_names_to_version_ranges_is_refused(
    fake_dist, tmp_path, returned
):
    body = f"""
    @hookimpl
    def core_app_dependencies():
        return {returned}
    """
    fake_dist("baddeps", blueprint_source("baddeps", body=body))
    with pytest.raises(PluginDeclarationError, match="core_app_dependencies"):
        create_app(config(tmp_path, ["baddeps"], PLUGIN_ERRORS="raise"))
