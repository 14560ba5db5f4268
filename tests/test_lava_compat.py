"""neuro_hts.lava_compat: the import hook that lets lava-nc 0.10.0 import on Python >= 3.11.

Two groups of tests:

* in this process, without importing Lava: ``patch_source`` on snippets and on the
  installed ``var_model.py`` text (compiled, never executed), the finder/loader pair, and
  ``install``/``uninstall``/``needed``;
* in subprocesses (``@pytest.mark.lava``): everything that imports Lava. Importing a Lava
  process module sets multiprocessing's start method to ``fork`` for the whole program, and
  a failing network can hang with forked children alive, so every Lava import happens in a
  child interpreter started in its own session, with a hard timeout that kills the whole
  process group, and every network is stopped in ``try/finally``. The child sessions are
  recorded and the last test checks that none of their processes is still alive.

Measured on the 2-core dev machine: the whole module takes ~20 s, of which Lava's own
LIF + Dense tests (83 passed) take ~13 s and each 10-step network ~0.6 s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

from neuro_hts import lava_compat
from neuro_hts.testing import leftover_processes, run_isolated, run_script

LAVA_SPEC = importlib.util.find_spec("lava")  # finds the package without importing it
requires_lava = pytest.mark.skipif(LAVA_SPEC is None, reason="lava-nc is not installed (make install)")
requires_py311 = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="lava-nc 0.10.0 imports without the hook before Python 3.11"
)

#: number of `name: ByteEncoder = ByteEncoder()` fields in lava-nc 0.10.0's var_model.py
#: (CoreEncoder x/y/p, ChipEncoder x/y/z, AxonEncoder hi/lo)
LAVA_0100_PATCHED_FIELDS = 8

# --------------------------------------------------------------------------- helpers
def _var_model_path() -> Path:
    """Installed lava/magma/compiler/var_model.py, located without importing Lava."""
    (lava_dir,) = LAVA_SPEC.submodule_search_locations
    return Path(lava_dir) / "magma" / "compiler" / "var_model.py"


def _file_state(path: Path):
    """(sha256, mtime_ns) of a file, or None if it does not exist."""
    if not path.exists():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.fixture
def hook_state(monkeypatch):
    """Leave sys.meta_path and the module's counter exactly as they were."""
    was_installed = lava_compat.is_installed()
    monkeypatch.setitem(lava_compat._state, "patched_fields", lava_compat.patched_fields())
    lava_compat.uninstall()
    yield
    lava_compat.uninstall()
    if was_installed:
        lava_compat.install()


# --------------------------------------------------------------------------- patch_source
SNIPPET = '''\
from dataclasses import dataclass


@dataclass
class ByteEncoder:
    base: int = 0
    len: int = 0


@dataclass
class CoreEncoder:
    """ x: ByteEncoder = ByteEncoder() on a docstring line """
    x: ByteEncoder = ByteEncoder()
    y:ByteEncoder=ByteEncoder()
    # q: ByteEncoder = ByteEncoder()
    payload: list = None


class TabIndented:
\tp: ByteEncoder = ByteEncoder()   


class Plain:
    keep: ByteEncoder = ByteEncoder(base=3)


x: ByteEncoder = ByteEncoder()
'''


def test_patch_source_rewrites_exactly_the_bytencoder_default_lines():
    patched, count = lava_compat.patch_source(SNIPPET)
    assert count == 3
    before, after = SNIPPET.splitlines(), patched.splitlines()
    assert len(before) == len(after)
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert [before[i] for i in changed] == [
        "    x: ByteEncoder = ByteEncoder()",
        "    y:ByteEncoder=ByteEncoder()",
        "\tp: ByteEncoder = ByteEncoder()   ",
    ]
    # the left-hand side (indentation, name, annotation, "=") is kept verbatim
    assert [after[i] for i in changed] == [
        '    x: ByteEncoder = __import__("dataclasses").field(default_factory=ByteEncoder)',
        '    y:ByteEncoder=__import__("dataclasses").field(default_factory=ByteEncoder)',
        '\tp: ByteEncoder = __import__("dataclasses").field(default_factory=ByteEncoder)',
    ]
    # untouched: the docstring line (text follows the call), the comment, a call with
    # arguments, a plain annotation and the module-level (unindented) assignment
    for line in (
        '    """ x: ByteEncoder = ByteEncoder() on a docstring line """',
        "    # q: ByteEncoder = ByteEncoder()",
        "    keep: ByteEncoder = ByteEncoder(base=3)",
        "    payload: list = None",
        "x: ByteEncoder = ByteEncoder()",
    ):
        assert line in after


def test_patch_source_is_idempotent_and_a_noop_on_fixed_source():
    patched, count = lava_compat.patch_source(SNIPPET)
    again, count2 = lava_compat.patch_source(patched)
    assert (count, count2) == (3, 0)
    assert again == patched
    fixed_upstream = "    x: ByteEncoder = field(default_factory=ByteEncoder)\n"
    assert lava_compat.patch_source(fixed_upstream) == (fixed_upstream, 0)
    assert lava_compat.patch_source("") == ("", 0)


def test_patched_snippet_defines_valid_dataclasses_with_fresh_defaults():
    patched, _ = lava_compat.patch_source(SNIPPET)
    ns: dict = {}
    exec(compile(patched, "<snippet>", "exec"), ns)
    core, byte_encoder = ns["CoreEncoder"], ns["ByteEncoder"]
    a, b = core(), core()
    assert a.x == byte_encoder(base=0, len=0) and a.y == byte_encoder()
    assert a.x is not b.x  # default_factory: one ByteEncoder per instance
    fields = {f.name: f for f in dataclasses.fields(core)}
    assert fields["x"].default_factory is byte_encoder
    assert fields["y"].default_factory is byte_encoder
    assert ns["Plain"].keep == byte_encoder(base=3)  # left alone
    assert ns["x"] == byte_encoder()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the ValueError is new in Python 3.11")
def test_unpatched_snippet_is_rejected_by_python_311_dataclasses():
    with pytest.raises(ValueError, match="mutable default .*ByteEncoder.* use default_factory"):
        exec(compile(SNIPPET, "<snippet>", "exec"), {})


@requires_lava
def test_patch_source_on_installed_var_model_rewrites_eight_fields():
    source = _var_model_path().read_text()
    patched, count = lava_compat.patch_source(source)
    assert count == LAVA_0100_PATCHED_FIELDS
    assert patched.count("field(default_factory=ByteEncoder)") == LAVA_0100_PATCHED_FIELDS
    assert "ByteEncoder = ByteEncoder()" not in patched
    # only those lines differ
    diff = [(a, b) for a, b in zip(source.splitlines(), patched.splitlines()) if a != b]
    assert len(diff) == LAVA_0100_PATCHED_FIELDS
    assert len(source.splitlines()) == len(patched.splitlines())
    compile(patched, str(_var_model_path()), "exec")  # compiles; not executed here
    assert lava_compat.patch_source(patched) == (patched, 0)


# --------------------------------------------------------------------------- install & finder
def test_needed_on_this_python():
    assert lava_compat.needed() is (sys.version_info >= (3, 11))


@requires_py311
def test_install_uninstall_idempotent(hook_state):
    assert not lava_compat.is_installed()
    assert lava_compat.install() is True
    assert lava_compat.install() is True
    finders = [f for f in sys.meta_path if f is lava_compat._finder]
    assert len(finders) == 1
    assert sys.meta_path[0] is lava_compat._finder  # ahead of the default PathFinder
    assert lava_compat.is_installed()
    lava_compat.uninstall()
    assert not lava_compat.is_installed()
    assert lava_compat._finder not in sys.meta_path
    lava_compat.uninstall()  # a second uninstall is harmless
    assert not lava_compat.is_installed()


def test_install_is_a_noop_when_not_needed(hook_state, monkeypatch):
    monkeypatch.setattr(lava_compat, "needed", lambda: False)
    before = list(sys.meta_path)
    assert lava_compat.install() is False
    assert sys.meta_path == before
    assert not lava_compat.is_installed()


def test_finder_ignores_every_other_module():
    finder = lava_compat._finder
    for name in ("lava", "lava.magma.compiler", "lava.magma.compiler.var_model_x", "numpy", "dataclasses"):
        assert finder.find_spec(name, None) is None


@requires_lava
def test_finder_loader_patch_in_memory_without_writing(hook_state, tmp_path):
    py = _var_model_path()
    pyc = Path(importlib.util.cache_from_source(str(py)))
    before = (_file_state(py), _file_state(pyc))
    spec = lava_compat._finder.find_spec(lava_compat.TARGET_MODULE, [str(py.parent)])
    assert spec is not None and spec.origin == str(py)
    assert isinstance(spec.loader, lava_compat._PatchedSourceLoader)
    code = spec.loader.get_code(lava_compat.TARGET_MODULE)  # compiled, not executed
    assert code.co_filename == str(py)
    assert lava_compat.patched_fields() == LAVA_0100_PATCHED_FIELDS
    assert (_file_state(py), _file_state(pyc)) == before


# --------------------------------------------------------------------------- importing Lava
@requires_lava
@requires_py311
@pytest.mark.lava
@pytest.mark.timeout(120)
def test_lava_does_not_import_on_py311_without_the_hook(tmp_path):
    """Documents why the hook exists: the stock import fails with the dataclass error."""
    res = run_isolated(
        [sys.executable, "-c", "import lava.proc.lif.process"], cwd=tmp_path, timeout=100
    )
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"ValueError: mutable default <class 'lava\.magma\.compiler\.var_model\.ByteEncoder'> "
        r"for field x is not allowed: use default_factory",
        last,
    ), res.stderr
    assert "lava/magma/compiler/var_model.py" in res.stderr


HOOK_IMPORT_SCRIPT = """
import dataclasses, json, sys
from neuro_hts import lava_compat
from neuro_hts.testing import leftover_processes, run_isolated, run_script
assert not lava_compat.is_installed() and lava_compat.patched_fields() is None
# bytecode writing is on, into an (initially empty) PYTHONPYCACHEPREFIX tree
assert not sys.dont_write_bytecode and sys.pycache_prefix == sys.argv[1]
assert lava_compat.install()
import lava.proc.lif.process
import lava.magma.compiler.var_model as vm
core_a, core_b = vm.CoreEncoder(), vm.CoreEncoder()
factories = {
    cls.__name__: [f.default_factory is vm.ByteEncoder for f in dataclasses.fields(cls)]
    for cls in (vm.CoreEncoder, vm.ChipEncoder, vm.AxonEncoder)
}
print("RESULT " + json.dumps({
    "patched_fields": lava_compat.patched_fields(),
    "loader": type(vm.__spec__.loader).__name__,
    "file": vm.__file__,
    "factories": factories,
    "fresh_default": core_a.x is not core_b.x and core_a.x == vm.ByteEncoder(),
    "lif": lava.proc.lif.process.LIF.__module__,
}))
"""


@requires_lava
@requires_py311
@pytest.mark.lava
@pytest.mark.timeout(120)
def test_lava_imports_with_hook_and_installed_files_stay_untouched(tmp_path):
    py = _var_model_path()
    pyc = Path(importlib.util.cache_from_source(str(py)))
    py_before, pyc_before = _file_state(py), _file_state(pyc)
    assert py_before is not None

    # Bytecode writing on (the environment may set PYTHONDONTWRITEBYTECODE), and redirected
    # to an empty PYTHONPYCACHEPREFIX: every module imported from source leaves its .pyc
    # there, except the one loaded through the hook.
    prefix = tmp_path / "pycache_prefix"
    out = run_script(
        tmp_path, HOOK_IMPORT_SCRIPT, str(prefix), timeout=100,
        env={"PYTHONDONTWRITEBYTECODE": None, "PYTHONPYCACHEPREFIX": str(prefix)},
    )

    assert out["patched_fields"] == LAVA_0100_PATCHED_FIELDS
    assert out["loader"] == "_PatchedSourceLoader"
    assert out["file"] == str(py)  # the installed file, loaded from where it is
    assert out["factories"] == {
        "CoreEncoder": [True] * 3, "ChipEncoder": [True] * 3, "AxonEncoder": [True] * 2
    }
    assert out["fresh_default"] is True
    assert out["lif"] == "lava.proc.lif.process"
    # the installed source and its bytecode cache are byte-for-byte what they were
    assert _file_state(py) == py_before
    assert _file_state(pyc) == pyc_before
    assert "ByteEncoder = ByteEncoder()" in py.read_text()
    if pyc_before is not None:  # a cached .pyc (from pip's install) holds the original code
        assert b"default_factory" not in pyc.read_bytes()
    written = {p.name.split(".")[0] for p in prefix.rglob("*.pyc")}
    compiler_dir = prefix / str(py.parent).lstrip(os.sep)
    written_next_to_var_model = {p.name.split(".")[0] for p in compiler_dir.glob("*.pyc")}
    assert "mappable_interface" in written_next_to_var_model  # imported by var_model itself
    assert "var_model" not in written


# --------------------------------------------------------------------------- a Lava network
# LIF(2) --Dense--> LIF(2), 10 steps of 1, run step by step; Vars read after every step.
NETWORK_SCRIPT = """
import json, sys
from neuro_hts import lava_compat
from neuro_hts.testing import leftover_processes, run_isolated, run_script
lava_compat.install()
import numpy as np
from lava.proc.lif.process import LIF
from lava.proc.dense.process import Dense
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.magma.core.run_conditions import RunSteps

tag = sys.argv[1]
if tag == "floating_pt":
    cfg = Loihi2SimCfg()
    src = LIF(shape=(2,), bias_mant=np.array([1.0, 2.0]), du=0.0, dv=0.0, vth=3.5)
    dst = LIF(shape=(2,), du=1.0, dv=0.0, vth=1e6)
    dense = Dense(weights=np.array([[2.0, 6.0], [-4.0, 2.0]]))
else:
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    src = LIF(shape=(2,), bias_mant=np.array([1, 2]), bias_exp=6, du=0, dv=0, vth=3)
    dst = LIF(shape=(2,), du=4095, dv=0, vth=2**16)
    dense = Dense(weights=np.array([[3, 7], [-3, 3]]))
src.s_out.connect(dense.s_in)
dense.a_out.connect(dst.a_in)
rec = {"v_src": [], "u_dst": [], "v_dst": [], "a_buff": []}
try:
    for _ in range(10):
        src.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
        rec["v_src"].append(src.v.get().tolist())
        rec["u_dst"].append(dst.u.get().tolist())
        rec["v_dst"].append(dst.v.get().tolist())
        rec["a_buff"].append(dense.a_buff.get().tolist())
    rec["weights"] = dense.weights.get().tolist()
finally:
    src.stop()
print("RESULT " + json.dumps(rec))
"""

# Hand-computed trajectories (steps 1..10). Source LIF, du = dv = 0 (no decay), v += bias:
#   neuron 0, bias 1, vth 3.5: v = 1, 2, 3, 4 > 3.5 -> spike, reset to 0, ...
#   neuron 1, bias 2:          v = 2, 4 > 3.5 -> spike, reset to 0, ...
# spikes: neuron 0 at t = 4, 8; neuron 1 at t = 2, 4, 6, 8, 10.
# Dense, W = [[2, 6], [-4, 2]], sends at t the sum computed from the spikes of t - 1; its
# a_buff Var holds W @ s(t): W[:, 1] = (6, 2) after n1 alone spikes, (8, -2) after both.
# Destination LIF: du = 1 (u = input), dv = 0 (v integrates u), vth out of reach.
W = [[2, 6], [-4, 2]]
V_SRC = [[1, 2], [2, 0], [3, 2], [0, 0], [1, 2], [2, 0], [3, 2], [0, 0], [1, 2], [2, 0]]
A_BUFF = [[0, 0], [6, 2], [0, 0], [8, -2], [0, 0], [6, 2], [0, 0], [8, -2], [0, 0], [6, 2]]
U_DST = [[0, 0], [0, 0], [6, 2], [0, 0], [8, -2], [0, 0], [6, 2], [0, 0], [8, -2], [0, 0]]
V_DST = [[0, 0], [0, 0], [6, 2], [6, 2], [14, 0], [14, 0], [20, 2], [20, 2], [28, 0], [28, 0]]


def _scaled(rows, k):
    return [[k * x for x in row] for row in rows]


@requires_lava
@requires_py311
@pytest.mark.lava
@pytest.mark.timeout(120)
@pytest.mark.parametrize("tag", ["floating_pt", "fixed_pt"])
def test_lif_dense_network_matches_hand_computed_values(tmp_path, tag):
    out = run_script(tmp_path, NETWORK_SCRIPT, tag, timeout=100)
    assert len(out["v_src"]) == 10
    if tag == "floating_pt":
        assert out["weights"] == W
        assert out["v_src"] == V_SRC
        assert out["u_dst"] == U_DST
        assert out["v_dst"] == V_DST
    else:
        # bit-accurate models: bias_mant 1, 2 << bias_exp 6 = 64, 128; threshold 3 << 6 =
        # 192 (v = 192 does not spike, 256 does): same spikes, voltages x 64. Input is
        # shifted left by 6 into u (du = 4095 -> decay 4096: u = input << 6).
        # Dense with mixed-sign weights (8 bits) truncates them on the first step to even
        # values: [[3, 7], [-3, 3]] -> [[2, 6], [-4, 2]] = W. (All-positive weights would
        # be kept as they are: sign mode "excitatory".)
        assert out["weights"] == W
        assert out["v_src"] == _scaled(V_SRC, 64)
        assert out["u_dst"] == _scaled(U_DST, 64)
        assert out["v_dst"] == _scaled(V_DST, 64)
    assert out["a_buff"] == A_BUFF


# --------------------------------------------------------------------------- Lava's own tests
@requires_lava
@requires_py311
@pytest.mark.lava
@pytest.mark.timeout(300)
def test_lavas_own_lif_and_dense_tests_pass_with_the_plugin(tmp_path):
    """Lava's test suite ships in the wheel as the top-level package ``tests``.

    cwd is an empty directory so that this project's ``tests/`` cannot shadow it, and
    ``-o addopts=`` drops this project's pytest options. Each of Lava's tests gets a 60 s
    timeout of its own (pytest-timeout is installed in the same environment).
    """
    args = [
        sys.executable, "-m", "pytest", "-p", "neuro_hts.lava_compat", "-p", "no:cacheprovider",
        "-o", "addopts=", "-o", "timeout=60", "-q",
        "--pyargs", "tests.lava.proc.lif", "tests.lava.proc.dense",
    ]
    res = run_isolated(args, cwd=tmp_path, timeout=280)
    tail = res.stdout[-3000:] + res.stderr[-3000:]
    assert res.returncode == 0, tail
    summary = res.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None, tail
    assert int(passed.group(1)) >= 80, summary  # 83 with lava-nc 0.10.0
    assert not re.search(r"\d+ (failed|error)", summary), summary
    assert list(tmp_path.iterdir()) == []  # nothing written into the working directory


# --------------------------------------------------------------------------- no leftovers
@pytest.mark.lava
def test_no_lava_processes_left_behind():
    """Runs last in this module: no process of any Lava subprocess session is alive, and
    this test process has no live descendant running Lava."""
    assert leftover_processes() == ([], [])
    # and Lava was never imported into the pytest process itself (it would have switched
    # multiprocessing to "fork" for every other test)
    assert [m for m in sys.modules if m == "lava" or m.startswith("lava.")] == []
