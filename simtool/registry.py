"""One small registry type for every family of components (builders, methods, models, losses,
miners, evaluators, dataset kinds).

A component registers itself, in its own file, with everything the rest of the house needs to know
about it::

    from simtool.evaluators._registry import register_evaluator

    @register_evaluator("mine", MineOptions, statistics=("dim",))
    class Mine(Evaluator): ...

Each family keeps its :class:`Registry` in a ``_registry.py`` module of its package (as timm keeps
``_registry.py`` apart from the package face), so members never import their own package's
``__init__``. Built-ins are found by scanning the family's package: every public module (a name
not starting with ``_``) is imported once, on the first lookup, and registers what it defines. CLI
help, spec unions and the tests are derived from the registries (:meth:`Registry.names`,
:meth:`Registry.entries`).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from simtool.errors import UserError


@dataclass
class Entry:
    """A registered component: its ``name``, the registered object and what it declared."""

    name: str
    obj: Any
    meta: dict = field(default_factory=dict)

    def __getattr__(self, key: str):
        meta = self.__dict__.get("meta") or {}
        if key in meta:
            return meta[key]
        raise AttributeError(key)


def close_matches(name: str, choices, n: int = 5) -> list[str]:
    """Up to ``n`` of ``choices`` that look like ``name`` (for "did you mean" hints)."""
    choices = list(choices)
    hits = difflib.get_close_matches(str(name), choices, n=n, cutoff=0.5)
    if not hits:
        hits = [c for c in choices if str(name).lower() in c.lower()][:n]
    return hits


class Registry:
    """Name → :class:`Entry` for one family.

    ``package``: the dotted package whose public modules hold the built-ins (imported on first use).
    ``unknown``: the message for an unknown name, with ``{name}`` and ``{choices}`` placeholders.
    ``check``: called as ``check(name, obj, meta)`` at registration (raise to refuse a malformed member).
    ``defaults``: metadata every entry has unless it declares its own.
    """

    def __init__(self, family: str, package: str | None, unknown: str | None = None,
                 check: Callable[[str, Any, dict], None] | None = None, defaults: dict | None = None):
        self.family = family
        self.package = package
        self.unknown = unknown or ("Unknown " + family + " {name!r}; choose one of: {choices}.")
        self.check = check
        self.defaults = dict(defaults or {})
        self._entries: dict[str, Entry] = {}
        self._loaded = package is None
        self._loading = False
        self.version = 0  # bumped on every change (cached spec unions compare it)

    # -- registering ------------------------------------------------------------------------------
    def register(self, name: str, obj: Any = None, **meta):
        """Register ``obj`` as ``name``; without ``obj``, a decorator that registers what it decorates."""

        def deco(target):
            full = {**self.defaults, **meta}
            if self.check is not None:
                self.check(name, target, full)
            self._entries[name] = Entry(name, target, full)
            self.version += 1
            return target

        return deco if obj is None else deco(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests register temporary components)."""
        if self._entries.pop(name, None) is not None:
            self.version += 1

    # -- built-ins --------------------------------------------------------------------------------
    def load_builtin(self) -> None:
        """Import every public module of the family's package once (each registers itself)."""
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            pkg = importlib.import_module(self.package)
            for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
                if not info.name.startswith("_"):
                    __import__(f"{self.package}.{info.name}")  # the interpreter's import (seen by -X importtime)
            self._loaded = True
        finally:
            self._loading = False

    # -- looking up -------------------------------------------------------------------------------
    def get(self, name: str) -> Entry:
        """The entry of ``name``; one sentence naming the closest names for an unknown one."""
        self.load_builtin()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UserError(self.unknown_message(name)) from None

    def unknown_message(self, name) -> str:
        names = self.names()
        return self.unknown.format(name=name, choices=", ".join(names), close=", ".join(close_matches(str(name), names)))

    def names(self) -> list[str]:
        self.load_builtin()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self.load_builtin()
        return [self._entries[n] for n in sorted(self._entries)]

    def items(self) -> list[tuple[str, Any]]:
        """``(name, registered object)`` pairs, sorted by name."""
        return [(e.name, e.obj) for e in self.entries()]

    def __contains__(self, name) -> bool:
        self.load_builtin()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.load_builtin()
        return len(self._entries)

    def __getitem__(self, name: str) -> Any:
        """The registered object of ``name`` (KeyError when unknown): the registry as a mapping."""
        self.load_builtin()
        return self._entries[name].obj

    def values(self) -> list[Any]:
        return [e.obj for e in self.entries()]

    def keys(self) -> list[str]:
        return self.names()
