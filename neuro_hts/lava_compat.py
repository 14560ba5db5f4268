"""Explicit, reinstall-proof compatibility layer for lava-nc 0.10.0 on Python >= 3.11.

lava-nc 0.10.0 (the last release) declares ``Requires-Python <3.11``. Exactly one thing
breaks on 3.11: ``lava/magma/compiler/var_model.py`` gives dataclass fields an instance
of another (unhashable) dataclass as default value::

    x: ByteEncoder = ByteEncoder()

which Python 3.11's :mod:`dataclasses` rejects ("mutable default ... use
default_factory"). Any ``import lava.proc...`` fails with that ``ValueError``.

Rather than editing the installed file (a reinstall would silently undo that), this
module installs an import hook (a :class:`importlib.abc.MetaPathFinder`) that loads that
one module from its installed source with the offending defaults rewritten to
``dataclasses.field(default_factory=ByteEncoder)``. The rewritten code is compiled in
memory and never written to disk, so the installed package is untouched. The hook is:

* explicit -- nothing happens until :func:`install` (or :func:`import_lava`) is called;
  code that builds Lava networks calls it right before importing Lava, and
  ``pytest -p neuro_hts.lava_compat`` loads it as a pytest plugin to run Lava's own
  test suite;
* narrow -- it matches one module name and a fixed source pattern, and reports how
  many fields it rewrote (:func:`patched_fields`);
* a no-op when not needed (Python < 3.11, or a Lava whose source no longer has the
  pattern).

See docs/LAVA_COMPAT.md.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import re
import sys
from types import ModuleType

__all__ = [
    "TARGET_MODULE",
    "install",
    "uninstall",
    "is_installed",
    "patched_fields",
    "patch_source",
    "import_lava",
    "LavaUnavailableError",
]

logger = logging.getLogger(__name__)

#: The one Lava module that does not import on Python 3.11.
TARGET_MODULE = "lava.magma.compiler.var_model"
#: Lava release this layer was written and tested against.
SUPPORTED_LAVA_VERSION = "0.10.0"

_PATTERN = re.compile(r"^(?P<lhs>[ \t]+\w+[ \t]*:[ \t]*ByteEncoder[ \t]*=[ \t]*)ByteEncoder\(\)[ \t]*$", re.M)
_REPLACEMENT = r'\g<lhs>__import__("dataclasses").field(default_factory=ByteEncoder)'

_state = {"patched_fields": None}


class LavaUnavailableError(ImportError):
    """Lava (lava-nc) is not installed in this environment."""


def patch_source(source: str) -> tuple[str, int]:
    """Rewrite unhashable dataclass defaults ``name: ByteEncoder = ByteEncoder()``.

    Returns the new source and the number of fields rewritten (0 if nothing matched).
    """
    return _PATTERN.subn(_REPLACEMENT, source)


class _PatchedSourceLoader(importlib.machinery.SourceFileLoader):
    """Loads the target module from its installed source, patched in memory.

    ``get_code`` is overridden so that neither an unpatched ``.pyc`` in ``__pycache__``
    is used nor a patched one written there.
    """

    def get_code(self, fullname):  # noqa: D102 - importlib protocol
        path = self.get_filename(fullname)
        source = importlib.util.decode_source(self.get_data(path))
        patched, count = patch_source(source)
        _state["patched_fields"] = count
        logger.debug("lava_compat: rewrote %d dataclass defaults in %s", count, path)
        return compile(patched, path, "exec", dont_inherit=True)


class _VarModelFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: D102
        if fullname != TARGET_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            return spec
        loader = _PatchedSourceLoader(fullname, spec.origin)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


_finder = _VarModelFinder()


def needed() -> bool:
    """True on Python versions where Lava 0.10.0 needs the patch (3.11 and newer)."""
    return sys.version_info >= (3, 11)


def install() -> bool:
    """Install the import hook (idempotent). Returns True if the hook is active.

    Must run before ``lava.magma.compiler.var_model`` is first imported; if that module
    is already loaded (unpatched import succeeded, e.g. on Python 3.10), it does nothing.
    """
    if not needed():
        return False
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    return True


def uninstall() -> None:
    """Remove the import hook (modules already imported stay as they are)."""
    while _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def is_installed() -> bool:
    return _finder in sys.meta_path


def patched_fields() -> int | None:
    """Number of fields rewritten when the target module was loaded (None: not loaded by us)."""
    return _state["patched_fields"]


def import_lava() -> ModuleType:
    """Install the hook, import ``lava`` and return it, or raise a clear error.

    Lava sets multiprocessing's start method to ``fork`` when its process modules are
    imported; callers should import it lazily, only where a Lava network is built.
    """
    install()
    try:
        import lava  # noqa: F401
        import lava.magma.compiler.var_model  # noqa: F401  (the module that needs the patch)
    except ModuleNotFoundError as exc:
        raise LavaUnavailableError(
            "Lava is not installed: run `make install` (installs lava-nc "
            f"{SUPPORTED_LAVA_VERSION} with --no-deps --ignore-requires-python)"
        ) from exc
    return sys.modules["lava"]


# --- pytest plugin: `python -m pytest -p neuro_hts.lava_compat --pyargs tests.lava...` ---
def pytest_configure(config):  # pragma: no cover - exercised through a subprocess test
    install()
