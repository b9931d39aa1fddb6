"""Hook specifications: the contract between the host and its plugins.

A plugin implements any of these with ``@core_app.hookimpl``; a function whose name
starts with ``core_app_`` but matches no hook here is an error, not silence.

How every hook is called: once per plugin, for each plugin on its own, in load order
(the plugins it depends on first, then by name). What one plugin's implementation
returns belongs to that plugin (its blueprint, its tasks, its checks), and what it
raises fails that plugin alone, named in the error. Because no call ever combines two
plugins' implementations, pluggy's options that order or wrap implementations across
plugins (``wrapper``, ``hookwrapper``, ``tryfirst``, ``trylast``) and ``optionalhook``
mean nothing here: an implementation that uses one, or a second implementation of the
same hook in one plugin (``specname``), is refused when the plugin is registered. A
hook a plugin does not implement is skipped for it; ``None`` means "nothing to declare".
Hooks are listed in the order the host calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import os

    import click
    from flask import Blueprint, Flask
    from sqlalchemy import MetaData

hookspec = pluggy.HookspecMarker("core_app")
hookimpl = pluggy.HookimplMarker("core_app")


# --------------------------------------------------------------------------------------
# Loading: called once per plugin, in load order, before anything is mounted
# --------------------------------------------------------------------------------------


@hookspec
def core_app_dependencies() -> Mapping[str, str] | None:
    """Name the plugins this plugin needs.

    Called once, right after the plugin is imported, to order loading.

    :return: a mapping of plugin name to a version specifier (``""`` for any version),
        for example ``{"notifications": ">=1.0"}``. Missing or incompatible plugins and
        cycles are a ``PluginDependencyError``.
    """


@hookspec
def core_app_config_defaults() -> Mapping[str, Any] | None:
    """Declare the plugin's configuration keys and their defaults.

    Called once while the app is built, before the blueprint is requested.

    :return: a mapping of upper-case key to default. Keys are placed in the plugin's
        namespace: plugin ``shop`` returning ``{"DB_NAME": "shop.db"}`` defines
        ``SHOP_DB_NAME``, which the settings file, ``CORE_APP_SHOP_DB_NAME`` or
        ``create_app(test_config)`` override.
    """


@hookspec
def core_app_models() -> MetaData | None:
    """Declare the plugin's tables.

    Called once while the app is built, in every process that loads the plugin (not
    beat), after configuration is complete.

    :return: the ``MetaData`` of the plugin's SQLAlchemy models (``Base.metadata`` of a
        ``DeclarativeBase`` whose ``metadata = core_app.db.plugin_metadata()``). Every
        table is named ``<plugin>_<name>``; a table another plugin declares, or a name
        in another plugin's prefix, is a ``PluginConflictError``; a foreign key to a
        plugin not named in ``core_app_dependencies`` is a ``PluginDeclarationError``.
    """


@hookspec
def core_app_migrations() -> str | os.PathLike[str] | None:
    """Name the folder of the plugin's Alembic revisions.

    Called once while the app is built, after ``core_app_models``. Without an
    implementation the host uses the ``migrations`` folder beside the plugin's module
    when it exists.

    :return: the folder's path. Its first revision carries the plugin's name as branch
        label; the plugin's revision is kept in the table ``alembic_version_<plugin>``.
        ``python run.py db revision PLUGIN -m MESSAGE`` writes revisions there.
    """


@hookspec
def core_app_blueprint(app: Flask) -> Blueprint | None:
    """Return the plugin's blueprint.

    Called once while the app is built, after configuration is complete.

    :param app: the app being built; read ``app.config`` here, do not add routes to it.
    :return: a ``flask.Blueprint`` whose ``url_prefix`` is set (``PLUGIN_URL_PREFIXES``
        in the host config overrides it). Nest blueprints inside it for more.
    """


@hookspec
def core_app_task_modules() -> Sequence[str] | None:
    """Name the modules that define the plugin's Celery tasks.

    Called once while the app is built. Without an implementation the host uses the
    plugin package's ``tasks`` module when it exists.

    :return: importable module names. Every task defined in them (plain
        ``@shared_task``) belongs to this plugin and is routed to its queue. Its name
        starts with ``<plugin>.`` or with the plugin's package (Celery's default name,
        ``core_app_billing.tasks.charge``), so that every process can route it.
    """


@hookspec
def core_app_task_options() -> Mapping[str, Mapping[str, Any]] | None:
    """Set Celery options on the plugin's own tasks.

    Called once while the app is built, after the plugin's task modules are imported,
    in every process that imports them (web processes and the plugin's own workers).

    :return: options by task name, as Celery's ``task_annotations`` take them: the key
        ``"*"`` sets options for every task of the plugin, a task's own entry wins over
        it, for example ``{"*": {"time_limit": 300}, "shop.report": {"ignore_result":
        True}}``. Options: ``ignore_result``, ``store_errors_even_if_ignored``,
        ``acks_late``, ``reject_on_worker_lost``, ``track_started`` (booleans);
        ``time_limit``, ``soft_time_limit`` (seconds); ``rate_limit`` (``"10/m"``, per
        worker); ``max_retries``, ``default_retry_delay``, ``autoretry_for`` (exception
        classes), ``retry_backoff``, ``retry_backoff_max``, ``retry_jitter``,
        ``retry_kwargs``. They win over the task decorator's and the app-wide
        ``CELERY`` settings; the operator's ``CELERY["task_annotations"]`` win over
        them. An unknown option or a bad value is a ``PluginDeclarationError``; a task
        the plugin does not own is refused (``PluginConflictError`` when another plugin
        owns it). Queues are not options: a plugin's tasks go to its queue.
    """


@hookspec
def core_app_beat_schedule() -> Mapping[str, Mapping[str, Any]] | None:
    """Declare periodic tasks for ``run.py beat``.

    Called once while the app is built.

    :return: Celery beat entries (each with ``task`` and ``schedule``) by name; the host
        prefixes each name with ``<plugin>.``.
    """


@hookspec
def core_app_health_checks() -> Mapping[str, Callable[[], object]] | None:
    """Declare readiness checks reported by ``GET /ready``.

    Called once while the app is built; the checks run on every ``/ready`` request.

    :return: check callables by name. A check passes when it returns without raising;
        a raise makes ``/ready`` answer 503.
    """


@hookspec
def core_app_cli_commands() -> Iterable[click.Command] | None:
    """Add commands to ``python run.py <plugin> ...`` (and ``flask <plugin> ...``).

    Called once while the app is built.

    :return: click commands, grouped under the plugin's name.
    """


# --------------------------------------------------------------------------------------
# Ready: called once per plugin after every plugin is mounted
# --------------------------------------------------------------------------------------


@hookspec
def core_app_ready(app: Flask) -> None:
    """Notify the plugin that the app is complete.

    Called once, in load order, after every enabled plugin is mounted and its tasks are
    registered. Do not add routes here: routes outside a blueprint are refused.

    :param app: the finished app.
    """
