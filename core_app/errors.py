"""The one exception hierarchy of core_app.

Every error a plugin can cause is a :class:`PluginError`: it names the plugin, the
distribution and version it came from, what went wrong and how to fix it, so that an
operator reading one line of a log knows which package to blame and what to do.
"""

from __future__ import annotations


class CoreAppError(Exception):
    """Base class of every error raised by core_app."""


class ConfigError(CoreAppError):
    """The host configuration is invalid (unknown policy, unsafe production settings)."""


class PluginError(CoreAppError):
    """A plugin could not be loaded, declared something invalid or failed in a hook."""

    #: Short label of the kind of failure, shown in reports.
    kind = "plugin error"

    def __init__(
        self,
        plugin: str,
        cause: str,
        fix: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
        other: str | None = None,
    ) -> None:
        self.plugin = plugin
        self.cause = cause
        self.fix = fix
        self.distribution = distribution
        self.version = version
        #: The other side of a conflict, when there is one.
        self.other = other
        super().__init__(self.message)

    @property
    def origin(self) -> str:
        if self.distribution is None:
            return "not from an installed distribution"
        return f"distribution {self.distribution} {self.version or '(unknown version)'}"

    @property
    def message(self) -> str:
        return f"Plugin {self.plugin!r} ({self.origin}): {self.kind}: {self.cause} Fix: {self.fix}"

    def with_origin(self, distribution: str | None, version: str | None) -> PluginError:
        """Fill in the distribution when the error was raised without it."""
        if self.distribution is None:
            self.distribution, self.version = distribution, version
            self.args = (self.message,)
        return self

    def as_dict(self) -> dict[str, str | None]:
        return {
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "kind": self.kind,
            "cause": self.cause,
            "fix": self.fix,
            "other": self.other,
        }


class PluginImportError(PluginError):
    """The entry point's module fails to import or names nothing."""

    kind = "import failed"


class PluginVersionError(PluginError):
    """The plugin's ``core-app`` requirement excludes the running host."""

    kind = "incompatible host version"


class PluginDeclarationError(PluginError):
    """The plugin is declared wrongly: bad name, bad prefix, bad hook return value."""

    kind = "invalid declaration"


class PluginHookError(PluginError):
    """A hook implementation raised, or implements a hook that does not exist."""

    kind = "hook failed"


class PluginConflictError(PluginError):
    """Two plugins (or a plugin and the host) claim the same name, prefix, route or task."""

    kind = "conflict"


class PluginDependencyError(PluginError):
    """A plugin needs a plugin that is missing, incompatible or part of a cycle."""

    kind = "dependency problem"


class TaskUnavailable(CoreAppError):
    """No enabled plugin owns the task name given to :func:`core_app.send_task`."""


class BrokerUnavailable(CoreAppError):
    """The broker did not accept a message within the publish retry budget."""
