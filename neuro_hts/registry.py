"""Named registries: the one place every choice list of the package comes from.

A :class:`Registry` maps names to objects (classes, functions, or lazily imported
``"module:attribute"`` entries, so that a higher layer can register an implementation
without a lower layer importing it). Config validation, the CLI's ``choices=`` and the
tests' parametrisation all read ``REGISTRY.names()``: adding an entry adds it everywhere,
and there is no hand-kept tuple to forget (Brian2 registers its state updaters the same
way).

The package's registries are created in the modules that own the concept
(``activations.ACTIVATIONS``, ``distributions``, ``algorithms.ALGORITHMS``, ...);
:func:`neuro_hts.catalog.catalog` lists them for ``neuro-hts list``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

__all__ = ["Registry", "all_registries"]

T = TypeVar("T")

_ALL: dict[str, "Registry"] = {}


class _Lazy:
    """An entry given as ``"package.module:attribute"``, imported on first use."""

    __slots__ = ("path", "description")

    def __init__(self, path: str, description: str = ""):
        if ":" not in path:
            raise ValueError(f"lazy registry entry must look like 'module:attribute', got {path!r}")
        self.path = path
        self.description = description

    def load(self):
        module, _, attr = self.path.partition(":")
        return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Names -> objects, in registration order.

    Parameters
    ----------
    kind : str
        What the entries are, in words ("connection kind", "algorithm"): used in errors
        and by ``neuro-hts list``.
    describe : callable, optional
        ``describe(obj) -> str``, a one-line description for ``neuro-hts list``; by
        default the first line of the object's docstring.
    """

    def __init__(self, kind: str, describe: Callable[[Any], str] | None = None):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._describe = describe
        _ALL.setdefault(kind, self)

    def register(self, name: str, obj: T | None = None, *, replace: bool = False):
        """Register ``obj`` under ``name``; without ``obj``, return a decorator.

        A taken name raises ConfigError unless ``replace=True``.
        """
        if obj is None:
            def decorator(o):
                self.register(name, o, replace=replace)
                return o

            return decorator
        if not isinstance(name, str) or not name or name != name.strip():
            raise ConfigError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not replace:
            raise ConfigError(f"{self.kind} {name!r} is already registered (pass replace=True)")
        self._entries[name] = obj
        return obj

    def register_lazy(self, name: str, path: str, description: str = "", *, replace: bool = False) -> None:
        """Register ``"package.module:attribute"`` under ``name``, imported on first :meth:`get`.

        Lets a lower layer name an implementation that lives in a higher one (the fixed
        engine in the hardware layer) without importing it, and keeps heavy imports (Numba)
        out of start-up. ``description`` is what :meth:`describe` says without importing.
        """
        self.register(name, _Lazy(path, description), replace=replace)

    def copy(self) -> "Registry[T]":
        """An independent copy with the same entries (not listed by :func:`all_registries`)."""
        new = Registry.__new__(Registry)
        new.kind, new._describe, new._entries = self.kind, self._describe, dict(self._entries)
        return new

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name raises ConfigError listing the choices."""
        try:
            entry = self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}") from None
        if isinstance(entry, _Lazy):
            entry = self._entries[name] = entry.load()
        return entry

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def check(self, name: str, where: str) -> None:
        """Raise ConfigError ``"<where> must be one of ..."`` unless ``name`` is registered."""
        if name not in self._entries:
            raise ConfigError(f"{where} must be one of {', '.join(self.names())}, got {name!r}")

    def describe(self, name: str) -> str:
        """One line about entry ``name`` (for ``neuro-hts list``); lazy entries are not imported."""
        entry = self._entries.get(name)
        if isinstance(entry, _Lazy):
            return entry.description
        obj = self.get(name)
        if self._describe is not None:
            return self._describe(obj)
        doc = getattr(obj, "__doc__", None) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def all_registries() -> dict[str, Registry]:
    """Every registry created so far, by kind (``neuro_hts.catalog`` imports the modules that fill them)."""
    return dict(_ALL)
