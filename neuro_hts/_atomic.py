"""Atomic file writes: write to a temporary file in the same directory, then rename.

A reader (or a crash, or kill -9) never sees a half-written file: the destination either
keeps its previous content or holds the complete new one. Also the files' digest
(:func:`file_sha256`) that bundles and distilled runs record of their sources.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "file_sha256"]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path next to ``dest``; on success fsync and rename it onto ``dest``.

    On an exception the temporary file is removed and ``dest`` is left untouched::

        with atomic_path("run.h5") as tmp:
            write_everything(tmp)
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:  # created inside the try, so that an exception (SIGTERM) right after creation removes it too
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=dest.parent)
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the result the mode a plain open() would have had
        # (or the mode of the file it replaces).
        try:
            mode = dest.stat().st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
