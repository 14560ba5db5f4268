"""Lava's forked processes die with the program that forked them.

Lava's runtime forks one process per Process model plus its services (about ten for a
two-layer network). When the program is killed with SIGKILL (``kill -9``, the OOM killer)
it gets no chance to stop the runtime, and the forked processes, which ignore SIGTERM
while they wait on their channels, stay alive holding their shared-memory segments.

:func:`install` registers an ``os.register_at_fork`` hook that asks Linux, in every child
forked from then on, to send it SIGKILL when its parent thread exits
(``prctl(PR_SET_PDEATHSIG, SIGKILL)``). Children of children get the same hook (it is
inherited with the interpreter), so a whole tree goes down with its root. If the parent
died between the fork and the ``prctl`` call, the child sees a different parent pid and
exits at once. Processes started with ``subprocess`` (fork + exec without Python's
hooks) are not affected.

On systems other than Linux :func:`install` does nothing and returns False: there the
runtime is stopped only on normal exits, errors, SIGINT and SIGTERM
(see :func:`neuro_hts.lava.network._deferred_interrupts`).
Tested by tests/test_lava_hts.py (``kill -9`` on a deploying process group leaves no
process behind).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

__all__ = ["install", "installed"]

_log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_state = {"installed": False, "parent": 0}


def _before_fork() -> None:
    _state["parent"] = os.getpid()


def _in_child() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL); exit if the parent is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:  # pragma: no cover - needs a failing kernel
        return
    if os.getppid() != _state["parent"]:
        os._exit(1)


def install() -> bool:
    """Make every process forked from now on die with its parent (Linux); idempotent.

    Returns whether the hook is in place.
    """
    if _state["installed"]:
        return True
    if not sys.platform.startswith("linux"):
        _log.debug("no parent-death signal on %s: Lava processes outlive a killed parent", sys.platform)
        return False
    os.register_at_fork(before=_before_fork, after_in_child=_in_child)
    _state["installed"] = True
    return True


def installed() -> bool:
    """Whether :func:`install` has put the hook in place in this process."""
    return _state["installed"]
