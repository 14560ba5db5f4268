"""Helpers for testing backends and learning rules against the reference.

Useful to anyone adding a backend: the same small random problems the package's own
suite uses, and isolated child interpreters for anything that imports Lava.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from .config import Config, DtConfig, ModelConfig, TrainConfig
from .network import Network, init_network

__all__ = ["ISOLATED_SESSIONS", "leftover_processes", "random_problem", "run_isolated", "run_script"]


def random_problem(
    arch,
    form: str = "leaky",
    activation: str = "hard_sigmoid",
    output: str = "mse",
    seed: int = 0,
    batch: int = 8,
    init_scale: float = 1.0,
    data_seed: int | None = None,
) -> tuple[Network, np.ndarray, np.ndarray]:
    """A float64 network from the package's initialiser (lognormal dt in every relaxed
    layer), inputs x ~ U(0, 1) of shape (batch, arch[0]) and one-hot targets y.

    ``data_seed`` (default ``1000 + seed``) seeds x and y independently of the weights.
    """
    cfg = Config(
        model=ModelConfig(arch=arch, form=form, activation=activation, output=output, init_scale=init_scale),
        dt=DtConfig(dist="lognormal", layers="all"),
        train=TrainConfig(seed=seed),
    )
    net = init_network(cfg, dtype=np.float64)
    rng = np.random.default_rng(1000 + seed if data_seed is None else data_seed)
    x = rng.uniform(0.0, 1.0, (batch, arch[0]))
    y = np.eye(arch[-1])[rng.integers(0, arch[-1], batch)]
    return net, x, y


# --------------------------------------------------------------------------- isolated runs
# Anything that imports Lava runs in a child interpreter: importing Lava switches
# multiprocessing to "fork" for the whole program, and a failing network can hang with
# forked children alive. The children are started in their own sessions (recorded here),
# so a test can kill a whole hung group and check at the end that nothing is left.

#: sessions (= pids of session leaders) of every child started by :func:`run_isolated`
ISOLATED_SESSIONS: list[int] = []


def _proc_stat(pid) -> tuple[str, int, int] | None:
    """(state, ppid, session) of a process from /proc, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces
    return rest[0], int(rest[1]), int(rest[3])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _live_processes() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, session) for every process that is not a zombie."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(entry)
            if st is not None and st[0] != "Z":
                out[int(entry)] = (st[1], st[2])
    return out


def _session_members(sessions) -> list[int]:
    sessions = set(sessions)
    return sorted(pid for pid, (_, sid) in _live_processes().items() if sid in sessions)


def _descendants(root: int) -> list[int]:
    procs = _live_processes()
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        kids = [pid for pid, (ppid, _) in procs.items() if ppid == parent]
        found += kids
        frontier += kids
    return sorted(found)


def run_isolated(args, *, cwd, timeout: float, env=None) -> subprocess.CompletedProcess:
    """Run ``args`` in a new session; on timeout kill its whole process group.

    ``env``: variables to set in the child's environment (None: remove the variable);
    PYTEST_ADDOPTS and PYTHONSTARTUP are never passed on. After the child exits, waits (up
    to 10 s) for every process of its session -- Lava's forked runtime processes included
    -- to be gone; kills them and raises AssertionError if any remains (or on timeout).
    """
    child_env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTHONSTARTUP")}
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    proc = subprocess.Popen(
        args, cwd=cwd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    ISOLATED_SESSIONS.append(proc.pid)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        leader_exited = proc.poll() is not None  # then its children hold the pipes open
        os.killpg(proc.pid, signal.SIGKILL)  # the group this call created, nothing else
        stdout, stderr = proc.communicate()
        what = "exited but left processes running" if leader_exited else "did not finish"
        raise AssertionError(f"{args} {what} after {timeout} s (killed); output:\n{stdout}\n{stderr}") from None
    deadline = time.monotonic() + 10.0
    while (left := _session_members([proc.pid])) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"processes of {args} still alive after it exited: {left}")
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def run_script(tmp_path, source: str, *argv: str, timeout: float = 120, env=None):
    """Run Python ``source`` in an isolated child (cwd=tmp_path); return its ``RESULT <json>`` line.

    The script must print exactly one line starting with ``RESULT `` followed by JSON.
    """
    script = Path(tmp_path) / "isolated_script.py"
    script.write_text(textwrap.dedent(source))
    res = run_isolated([sys.executable, str(script), *argv], cwd=tmp_path, timeout=timeout, env=env)
    assert res.returncode == 0, f"script failed (rc={res.returncode}):\n{res.stdout}\n{res.stderr}"
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, res.stdout
    return json.loads(lines[0][len("RESULT ") :])


def leftover_processes() -> tuple[list[int], list[int]]:
    """(live members of any isolated session, live descendants of this process running
    Lava or pytest): both empty when every isolated child cleaned up after itself."""
    lava_descendants = [
        pid for pid in _descendants(os.getpid()) if "lava" in _cmdline(pid) or "pytest" in _cmdline(pid)
    ]
    return _session_members(ISOLATED_SESSIONS), lava_descendants


def interrupt_when_lava_runs(argv, *, cwd, wait: float = 120, settle: float = 1.0,
                             timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python -m neuro_hts ARGV`` in a new session, Ctrl-C it once Lava runs, and check it cleans up.

    Waits (up to ``wait`` s) until Lava's runtime processes exist (the session has 6 or more
    members: the leader, multiprocessing's resource tracker and the runtime's processes),
    then ``settle`` s, then sends SIGINT to the whole process group, as a terminal's Ctrl-C
    does. Returns the finished child; raises AssertionError (after SIGKILL of the group) if
    it ended before Lava started, and if any process of its session is still alive 10 s
    after it exited.
    """
    proc = subprocess.Popen([sys.executable, "-m", "neuro_hts", *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    ISOLATED_SESSIONS.append(proc.pid)
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and len(leftover_processes()[0]) < 6 and proc.poll() is None:
            time.sleep(0.2)
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"{argv} ended (rc {proc.returncode}) before Lava ran:\n{out}\n{err}")
        time.sleep(settle)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    deadline = time.monotonic() + 10.0
    while leftover_processes()[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    left = leftover_processes()[0]
    assert left == [], f"processes of {argv} still alive after Ctrl-C: {left}"
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
