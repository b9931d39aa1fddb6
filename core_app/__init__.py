"""core_app: a Flask host whose routes and Celery tasks come from installed plugins.

Write a plugin: a distribution with an entry point in the group ``core_app.plugins``
whose target implements hooks from :mod:`core_app.hookspecs`::

    [project.entry-points."core_app.plugins"]
    shop = "core_app_shop"

    # core_app_shop/__init__.py
    from core_app import hookimpl

    @hookimpl
    def core_app_blueprint(app):
        from .views import blueprint
        return blueprint
"""

from importlib.metadata import version as _version

from .app import create_app
from .cli import main
from .errors import (
    BrokerUnavailable,
    ConfigError,
    CoreAppError,
    PluginConflictError,
    PluginDeclarationError,
    PluginDependencyError,
    PluginError,
    PluginHookError,
    PluginImportError,
    PluginVersionError,
    TaskUnavailable,
)
from .hookspecs import hookimpl
from .responses import json_error
from .roles import Role
from .schemas import FieldError, invalid, schema
from .tasks import send_task

__version__ = _version("core-app")

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "CoreAppError",
    "FieldError",
    "PluginConflictError",
    "PluginDeclarationError",
    "PluginDependencyError",
    "PluginError",
    "PluginHookError",
    "PluginImportError",
    "PluginVersionError",
    "Role",
    "TaskUnavailable",
    "__version__",
    "create_app",
    "hookimpl",
    "invalid",
    "json_error",
    "main",
    "schema",
    "send_task",
]
