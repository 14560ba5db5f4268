"""Opening neuro-hts HDF5 files (run files, deploy bundles) with one-line errors."""

from __future__ import annotations

import contextlib
from pathlib import Path

from .errors import RunFileError

__all__ = ["open_checked"]


@contextlib.contextmanager
def open_checked(path: str | Path, format_name: str, schema_version, kind: str):
    """Open ``path`` read-only, check its ``format`` and ``schema_version`` attributes,
    and yield the h5py File.

    ``schema_version``: the version this reader writes, or a tuple of every version it
    reads (older files are migrated by the caller, which reads ``f.attrs``).

    Any missing key, bad value or corrupt metadata met while the caller reads inside the
    ``with`` block becomes a one-line :class:`RunFileError` naming the file (``kind`` is
    the word used in messages, e.g. 'run' or 'bundle').
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise RunFileError(f"{kind} file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise RunFileError(f"{path} is not a readable HDF5 file (truncated or not HDF5)") from None
    with f:
        try:
            if f.attrs.get("format") != format_name:
                raise RunFileError(f"{path} is not a neuro-hts {kind} file (no format={format_name!r} attribute)")
            version = int(f.attrs["schema_version"])
            accepted = tuple(schema_version) if isinstance(schema_version, (tuple, list)) else (schema_version,)
            if version not in accepted:
                reads = " and ".join(map(str, accepted))
                raise RunFileError(f"{path}: unsupported schema_version {version} for a {kind} file (this neuro-hts reads {reads})")
            yield f
        except RunFileError:
            raise
        # h5py raises RuntimeError on corrupt metadata
        except (KeyError, ValueError, TypeError, OSError, RuntimeError) as exc:
            raise RunFileError(f"{path}: damaged or incomplete {kind} file ({exc.__class__.__name__}: {exc})") from None
