"""Name -> object registries with "did you mean" errors (after lm-evaluation-harness's task registry).

Each registry is one list: the built-in names map to the module that defines them, imported only when a name is
looked up (so `diffmia --help` lists every attack without importing torch), and other installed packages add names
through a Python entry-point group (``diffmia.attacks``, ``diffmia.defenses``, ...)::

    # a plugin package's pyproject.toml
    [project.entry-points."diffmia.attacks"]
    my_attack = "my_package.my_attack:MyAttack"

Objects register themselves with the registry's decorator when their module is imported; an entry point's object is
registered under its entry-point name when it is first looked up.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Callable, Generic, Iterator, TypeVar

from diffmia.core.errors import DiffmiaError

T = TypeVar("T")
log = logging.getLogger(__name__)


def did_you_mean(name: str, choices: list[str]) -> str:
    """A ' (did you mean 'x'?)' suffix for an unknown name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


class UnknownNameError(DiffmiaError, KeyError):
    """Raised for a name that is not registered; its message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written
        return str(self.args[0])


class PluginError(DiffmiaError, RuntimeError):
    """A plugin's entry point could not be loaded or does not provide what its name says."""


class Registry(Generic[T]):
    """One registry of named objects: built-ins (imported lazily), plugins (entry points) and direct registrations.

    Args:
        kind: What the names are ("attack", "defense", ...), used in error messages.
        builtin: Built-in names mapped to the module that registers each when imported.
        group: The entry-point group other packages add names through, or None for none.
    """

    def __init__(self, kind: str, builtin: dict[str, str] | None = None, group: str | None = None):
        self.kind = kind
        self.group = group
        self._builtin = dict(builtin or {})
        self._items: dict[str, T] = {}
        self._plugins: dict[str, EntryPoint] | None = None
        self._loaded_plugins: set[str] = set()

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that registers its object under `name`.

        Raises:
            ValueError: `name` is registered already.
        """

        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def plugins(self) -> dict[str, EntryPoint]:
        """The entry points of installed packages in this registry's group (a built-in name cannot be taken)."""
        if self._plugins is None:
            found: dict[str, EntryPoint] = {}
            for ep in entry_points(group=self.group) if self.group else ():
                if ep.name in self._builtin:
                    log.warning(
                        "ignoring the %s plugin '%s' (%s): the name is a built-in %s",
                        self.kind,
                        ep.name,
                        ep.value,
                        self.kind,
                    )
                    continue
                found.setdefault(ep.name, ep)
            self._plugins = found
        return self._plugins

    def refresh(self) -> None:
        """Look for plugins again (after installing or removing a package in a running process)."""
        for name in self._loaded_plugins:
            self._items.pop(name, None)
        self._loaded_plugins.clear()
        self._plugins = None

    def get(self, name: str) -> T:
        """The object registered under `name`, importing its module on first use.

        Raises:
            UnknownNameError: No built-in, plugin or registered object has this name (the message suggests the
                closest name and lists the known ones).
            PluginError: A plugin's entry point failed to import or names an object of another name.
        """
        if name in self._items:
            return self._items[name]
        if name in self._builtin:
            importlib.import_module(self._builtin[name])
            if name not in self._items:
                raise RuntimeError(f"module {self._builtin[name]} did not register the {self.kind} '{name}'")
            return self._items[name]
        plugin = self.plugins().get(name)
        if plugin is None:
            known = ", ".join(self.names()) or "none"
            raise UnknownNameError(f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; known: {known}")
        try:
            obj = plugin.load()
        except Exception as exc:  # a broken plugin: one line naming it, whatever it raised
            raise PluginError(
                f"{self.kind} plugin '{name}' ({plugin.value}, entry point group {self.group}) failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        declared = getattr(obj, "name", name)
        if declared != name:
            raise PluginError(
                f"{self.kind} plugin '{name}' ({plugin.value}) is named '{declared}': the entry point's name and the "
                f"object's `name` must agree"
            )
        self._loaded_plugins.add(name)
        return self._items.setdefault(name, obj)

    def names(self) -> list[str]:
        """Every name, sorted, without importing anything."""
        return sorted(set(self._builtin) | set(self._items) | set(self.plugins()))

    def load_all(self) -> dict[str, T]:
        """Every object by name (imports every built-in module and loads every plugin)."""
        return {name: self.get(name) for name in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
