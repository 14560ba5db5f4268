"""Dendritic connections (Kubo 2026, docs/FAMILY.md section 3; equations in docs/DENDRITIC.md).

A ``dendritic`` connection from layer ``pre`` (n_in units) to layer ``post`` (n_out units)
holds two sets of masked ReLU branches with their own weights:

* the **basal** branches of ``post`` (from below): each soma j of ``post`` has K_b
  branches; branch (j, b) sees a fixed random subset of exactly ``round(p n_in)`` inputs
  (its mask row), has a bias c_jb, and the soma's drive is the mean of its branches::

      P_jb = sum_k (W ⊙ M)_jbk u_k + c_jb                 (branch_potentials)
      d_j  = (1 / K_b) sum_b ReLU(P_jb)                      (soma_drive)

* the **apical** branches of ``pre`` (from above; only when ``pre`` is relaxed, i.e. not
  the clamped input): each unit i of ``pre`` has K_a branches reading ``post`` through
  their own weights A (not W^T), masked like the basal ones (or dense with
  ``apical_dense``), no bias, scaled by the apical scale a::

      f_i = a (1 / K_a) sum_b ReLU( sum_j (A ⊙ M^a)_ibj v_j )   (Dendritic.feedback)

so a hidden layer l is driven by h_l = Basal_l(s_{l-1}) + a Apical_l(s_{l+1}) (+ b_l with
``soma_bias``; the authors' somas have none). Each layer has its own primitive
phi_l = s_l . h_l; this connection has a term in ``post``'s (``phi_post = v . d``) and
one in ``pre``'s (``phi_pre = u . f``), and its parameters appear in exactly one of them,
so the EP contrast of d phi / d theta (:func:`neuro_hts.dynamics.ep_gradients`) is the
per-layer update of the authors' code. There is no single energy: EP need not equal
BPTT here.

Parameters are one flat vector per connection (the run file's ``weight``), read through
views: ``[W (n_out, K_b, n_in) | c (n_out, K_b) | A (n_in, K_a, n_out)]`` (A only with
apical branches). Masks are buffers, drawn once from the seed (:meth:`Dendritic.draw_buffers`)
and stored in the run file, never trained; masked weights start at zero and get a zero
update (the gradient is multiplied by the mask), so they stay zero. With SGD or Adam a
zero gradient leaves a weight unchanged, so ``W ⊙ M = W`` holds throughout training.
"""

from __future__ import annotations

import math

import numpy as np

from .connections import Connection
from .errors import ConfigError

__all__ = ["Dendritic", "dendritic_model", "override_branches", "BRANCH_FLAGS", "ep_bptt_alignment", "cosine", "branch_size", "draw_mask", "branch_potentials", "soma_drive", "branch_adjoint"]


def branch_size(sparsity: float, n: int) -> int:
    """Inputs per branch: ``max(1, round(p n))`` (Python's round, as the authors' code)."""
    return max(1, int(round(sparsity * n)))


def draw_mask(rows: int, n: int, keep: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, n) uint8 mask with exactly ``keep`` ones per row, each row's subset uniform at random."""
    order = np.argsort(rng.random((rows, n)), axis=1)[:, :keep]
    mask = np.zeros((rows, n), dtype=np.uint8)
    np.put_along_axis(mask, order, 1, axis=1)
    return mask


def branch_potentials(u: np.ndarray, w_masked: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """P = u (W ⊙ M)^T + c: (B, n_in) -> (B, rows), one column per branch (rows = somas x branches)."""
    p = u @ w_masked.T
    return p if bias is None else p + bias


def soma_drive(p: np.ndarray, n_branches: int) -> np.ndarray:
    """d_j = (1 / K) sum_b ReLU(P_jb): (B, n_soma * K) -> (B, n_soma), branch b of soma j in column j K + b."""
    B = p.shape[0]
    return np.maximum(p, 0.0).reshape(B, -1, n_branches).mean(axis=2)


def branch_adjoint(g_soma: np.ndarray, p: np.ndarray, n_branches: int, scale: float = 1.0) -> np.ndarray:
    """Adjoint of the branch potentials given that of ``scale * soma_drive(P)``:
    G_jb = scale g_j 1[P_jb > 0] / K, (B, n_soma * K) (ReLU'(0) = 0, as torch)."""
    B = p.shape[0]
    g = (scale / n_branches) * g_soma
    return (g[:, :, None] * (p > 0).reshape(B, -1, n_branches)).reshape(B, -1)


def _int_option(opts, key, where, minimum=1):
    v = opts[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{where}: dendritic {key} must be an integer >= {minimum}, got {v!r}")


class Dendritic(Connection):
    """Masked ReLU branches: basal from ``pre`` into ``post``, apical from ``post`` into ``pre``.

    Options: ``basal_branches`` K_b, ``apical_branches`` K_a, ``branch_sparsity`` p (the
    fraction of a branch's possible inputs it sees), ``apical_scale`` a, ``apical_dense``
    (apical branches see every unit of ``post``), ``soma_bias`` (a learned bias b_post on
    the soma besides the branch biases; off as in the authors' code) and ``apical``
    (whether ``pre`` gets apical branches; by default exactly when ``pre`` is relaxed).
    The defaults are the authors' README run (8, 2, 0.5, 0.2).
    """

    kind = "dendritic"
    symmetric = False
    OPTIONS = {"basal_branches": 8, "apical_branches": 2, "branch_sparsity": 0.5, "apical_scale": 0.2,
               "apical_dense": False, "soma_bias": False, "apical": None}

    def __init__(self, weight: np.ndarray, pre_shape, post_shape, basal_mask: np.ndarray,
                 apical_mask: np.ndarray | None = None, *, basal_branches: int = 8, apical_branches: int = 2,
                 branch_sparsity: float = 0.5, apical_scale: float = 0.2, apical_dense: bool = False,
                 soma_bias: bool = False, apical: bool = True):
        self.n_in, self.n_out = int(pre_shape[0]), int(post_shape[0])
        self.pre_shape, self.post_shape = (self.n_in,), (self.n_out,)
        self.kb, self.ka = int(basal_branches), int(apical_branches)
        self.sparsity, self.scale = float(branch_sparsity), float(apical_scale)
        self.apical, self.apical_dense, self.post_bias = bool(apical), bool(apical_dense), bool(soma_bias)
        n_w, n_c, n_a = self.sizes(self.n_in, self.n_out, self.kb, self.ka, self.apical)
        if np.ndim(weight) != 1 or weight.size != n_w + n_c + n_a:
            raise ConfigError(f"a dendritic {self.n_in} -> {self.n_out} connection needs a flat weight of "
                              f"{n_w + n_c + n_a} values, got shape {np.shape(weight)}")
        self.weight = weight
        self.basal_weight = weight[:n_w].reshape(self.n_out * self.kb, self.n_in)
        self.basal_bias = weight[n_w : n_w + n_c]
        self.apical_weight = weight[n_w + n_c :].reshape(self.n_in * self.ka, self.n_out) if self.apical else None
        if np.shape(basal_mask) != self.basal_weight.shape:
            raise ConfigError(f"dendritic basal mask has shape {np.shape(basal_mask)}, expected {self.basal_weight.shape}")
        self.basal_mask = basal_mask
        if self.apical and not self.apical_dense and np.shape(apical_mask) != self.apical_weight.shape:
            raise ConfigError(f"dendritic apical mask has shape {np.shape(apical_mask)}, expected {self.apical_weight.shape}")
        self.apical_mask = apical_mask if (self.apical and not self.apical_dense) else None

    # ------------------------------------------------------------------ construction
    @staticmethod
    def sizes(n_in: int, n_out: int, kb: int, ka: int, apical: bool) -> tuple[int, int, int]:
        """Numbers of basal weights, basal biases and apical weights in the flat vector."""
        return n_out * kb * n_in, n_out * kb, (n_in * ka * n_out if apical else 0)

    @classmethod
    def check(cls, options, pre_shape, post_shape, where):
        opts = super().check(options, pre_shape, post_shape, where)
        if len(pre_shape) != 1 or len(post_shape) != 1:
            raise ConfigError(f"{where}: dendritic links layers of shape [n], got {list(pre_shape)} -> {list(post_shape)}")
        _int_option(opts, "basal_branches", where)
        _int_option(opts, "apical_branches", where)
        p, a = opts["branch_sparsity"], opts["apical_scale"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
            raise ConfigError(f"{where}: dendritic branch_sparsity must be a number in (0, 1], got {p!r}")
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
            raise ConfigError(f"{where}: dendritic apical_scale must be a finite number, got {a!r}")
        for k in ("apical_dense", "soma_bias"):
            if not isinstance(opts[k], bool):
                raise ConfigError(f"{where}: dendritic {k} must be true or false, got {opts[k]!r}")
        if opts["apical"] is not None and not isinstance(opts["apical"], bool):
            raise ConfigError(f"{where}: dendritic apical must be true or false, got {opts['apical']!r}")
        opts["branch_sparsity"], opts["apical_scale"] = float(p), float(a)
        return opts

    @classmethod
    def place(cls, options, pre_is_input, where):
        """``apical`` defaults to "pre is relaxed"; the clamped input cannot take apical branches."""
        opts = dict(options)
        if opts.get("apical") is None:
            opts["apical"] = not pre_is_input
        elif opts["apical"] and pre_is_input:
            raise ConfigError(f"{where}: the input layer is clamped, it has no apical branches (apical = false)")
        return opts

    @classmethod
    def param_shapes(cls, pre_shape, post_shape, **options):
        n_w, n_c, n_a = cls.sizes(pre_shape[0], post_shape[0], options["basal_branches"], options["apical_branches"],
                                  bool(options.get("apical")))
        return {"weight": (n_w + n_c + n_a,)}

    @classmethod
    def buffer_shapes(cls, pre_shape, post_shape, **options) -> dict[str, tuple[int, int]]:
        """The masks: basal (n_out K_b, n_in); apical (n_in K_a, n_out) unless dense or absent."""
        n_in, n_out = pre_shape[0], post_shape[0]
        out = {"basal_mask": (n_out * options["basal_branches"], n_in)}
        if options.get("apical") and not options["apical_dense"]:
            out["apical_mask"] = (n_in * options["apical_branches"], n_out)
        return out

    @classmethod
    def fan_in(cls, pre_shape, post_shape, **options):
        return pre_shape[0]

    @classmethod
    def draw_buffers(cls, pre_shape, post_shape, rng: np.random.Generator, **options) -> dict[str, np.ndarray]:
        """Masks with exactly round(p n) inputs per branch row (:func:`draw_mask`), basal then apical."""
        p = options["branch_sparsity"]
        out = {}
        for name, (rows, n) in cls.buffer_shapes(pre_shape, post_shape, **options).items():
            out[name] = draw_mask(rows, n, branch_size(p, n), rng)
        return out

    @classmethod
    def init_weight(cls, pre_shape, post_shape, buffers, rng: np.random.Generator, scale: float = 1.0,
                    **options) -> np.ndarray:
        """The flat parameters, as the authors initialise them (times ``scale``), masked entries zero.

        W ~ U(-k, k), k = scale / sqrt(n_in) (torch's default for a (branches, n_in) weight);
        c ~ U(-k_c, k_c), k_c = scale / sqrt(round(p n_in)); A ~ U(-k_a, k_a), k_a = scale / sqrt(n_out).
        """
        n_in, n_out = pre_shape[0], post_shape[0]
        kb, ka, apical = options["basal_branches"], options["apical_branches"], bool(options.get("apical"))
        keep = branch_size(options["branch_sparsity"], n_in)
        w = rng.uniform(-scale / math.sqrt(n_in), scale / math.sqrt(n_in), (n_out * kb, n_in)) * buffers["basal_mask"]
        c = rng.uniform(-scale / math.sqrt(keep), scale / math.sqrt(keep), n_out * kb)
        parts = [w.ravel(), c]
        if apical:
            a = rng.uniform(-scale / math.sqrt(n_out), scale / math.sqrt(n_out), (n_in * ka, n_out))
            if "apical_mask" in buffers:
                a = a * buffers["apical_mask"]
            parts.append(a.ravel())
        return np.concatenate(parts)

    @classmethod
    def build(cls, weight, pre_shape, post_shape, buffers=None, **options):
        if not buffers or "basal_mask" not in buffers:
            raise ConfigError("a dendritic connection needs its masks (buffers basal_mask, apical_mask)")
        return cls(weight, pre_shape, post_shape, buffers["basal_mask"], buffers.get("apical_mask"), **options)

    def params(self):
        return {"weight": self.weight}

    def parts(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Views of a flat vector laid out as :attr:`weight` (a gradient, say) by part."""
        n_w, n_c, n_a = self.sizes(self.n_in, self.n_out, self.kb, self.ka, self.apical)
        out = {"basal_weight": flat[:n_w].reshape(self.basal_weight.shape), "basal_bias": flat[n_w : n_w + n_c]}
        if self.apical:
            out["apical_weight"] = flat[n_w + n_c :].reshape(self.apical_weight.shape)
        return out

    # ------------------------------------------------------------------ the branches
    def _basal_masked(self) -> np.ndarray:
        return self.basal_weight * self.basal_mask

    def _apical_masked(self) -> np.ndarray:
        return self.apical_weight if self.apical_mask is None else self.apical_weight * self.apical_mask

    def basal_potentials(self, u: np.ndarray) -> np.ndarray:
        """P (B, n_out K_b) of the basal branches of ``post`` at the pre state ``u``."""
        return branch_potentials(u, self._basal_masked(), self.basal_bias)

    def apical_potentials(self, v: np.ndarray) -> np.ndarray:
        """Q (B, n_in K_a) of the apical branches of ``pre`` at the post state ``v`` (no bias)."""
        return branch_potentials(v, self._apical_masked(), None)

    def drive_post(self, r_pre):
        """Basal(u) = mean over each soma's branches of ReLU(P), (B, n_out) (:func:`soma_drive`)."""
        return soma_drive(self.basal_potentials(r_pre), self.kb)

    def feedback(self, r_post, r_pre=None):
        """a Apical(v) = a mean over each unit's apical branches of ReLU(Q), (B, n_in); zeros without apical branches."""
        if not self.apical:
            return np.zeros((r_post.shape[0], self.n_in), dtype=r_post.dtype)
        return self.scale * soma_drive(self.apical_potentials(r_post), self.ka)

    def phi_post(self, r_pre, r_post):
        """v . Basal(u) per sample: the term of ``post``'s primitive."""
        return np.sum(r_post * self.drive_post(r_pre), axis=1)

    def phi_pre(self, r_pre, r_post):
        """u . a Apical(v) per sample: the term of ``pre``'s primitive (zero without apical branches)."""
        return np.sum(r_pre * self.feedback(r_post, r_pre), axis=1)

    def phi(self, r_pre, r_post):
        """phi_post + phi_pre (its parameters appear in exactly one of the two)."""
        return self.phi_post(r_pre, r_post) + self.phi_pre(r_pre, r_post)

    # ------------------------------------------------------------------ derivatives
    def _flat(self, g_w=None, g_c=None, g_a=None) -> np.ndarray:
        out = np.zeros_like(self.weight)
        parts = self.parts(out)
        if g_w is not None:
            parts["basal_weight"][...] = g_w
            parts["basal_bias"][...] = g_c
        if g_a is not None:
            parts["apical_weight"][...] = g_a
        return out

    def _basal_grads(self, u, g_post):
        """(adjoint of u, dW, dc) for the adjoint ``g_post`` of Basal(u); dW is masked (zero where M = 0)."""
        G = branch_adjoint(g_post, self.basal_potentials(u), self.kb)
        return G @ self._basal_masked(), (G.T @ u) * self.basal_mask, G.sum(axis=0)

    def _apical_grads(self, v, g_pre):
        """(adjoint of v, dA) for the adjoint ``g_pre`` of a Apical(v); dA is masked unless dense."""
        H = branch_adjoint(g_pre, self.apical_potentials(v), self.ka, self.scale)
        d_a = H.T @ v
        if self.apical_mask is not None:
            d_a = d_a * self.apical_mask
        return H @ self._apical_masked(), d_a

    def param_grad(self, r_pre, r_post):
        """d (sum_batch phi) / d theta: basal part from phi_post (adjoint v), apical part from phi_pre (adjoint u)."""
        _, d_w, d_c = self._basal_grads(r_pre, r_post)
        d_a = self._apical_grads(r_post, r_pre)[1] if self.apical else None
        return {"weight": self._flat(d_w, d_c, d_a)}

    def param_grad_contrast(self, r_pre_a, r_post_a, r_pre_b, r_post_b):
        """d phi / d theta (a) - (b); with one pre state for both (the clamped input) and no apical branches,
        one pass: dW = ((G_a - G_b)^T u) ⊙ M with G = v 1[P > 0] / K_b at the shared P."""
        if r_pre_a is not r_pre_b or self.apical:
            return super().param_grad_contrast(r_pre_a, r_post_a, r_pre_b, r_post_b)
        G = branch_adjoint(r_post_a - r_post_b, self.basal_potentials(r_pre_a), self.kb)
        return {"weight": self._flat((G.T @ r_pre_a) * self.basal_mask, G.sum(axis=0))}

    def vjp(self, r_pre, g_post):
        """Adjoints (of u, of theta) given the adjoint ``g_post`` of :meth:`drive_post`."""
        g_u, d_w, d_c = self._basal_grads(r_pre, g_post)
        return g_u, {"weight": self._flat(d_w, d_c)}

    def feedback_vjp(self, r_post, r_pre, g_pre):
        """Adjoints (of v, of u, of theta) given the adjoint ``g_pre`` of :meth:`feedback` (which does not read u)."""
        if not self.apical:
            return np.zeros_like(r_post), np.zeros_like(r_pre), {"weight": np.zeros_like(self.weight)}
        g_v, d_a = self._apical_grads(r_post, g_pre)
        return g_v, np.zeros_like(r_pre), {"weight": self._flat(g_a=d_a)}


def dendritic_model(arch, output: str = "mse", **options) -> dict:
    """A ``[model]`` table's parts for the chain ``arch`` of dendritic connections (``options``: the kind's).

    Layers ``x, h1, ..., out`` as :meth:`neuro_hts.spec.NetworkSpec.from_arch` names them; an
    MSE cost on the top (``output = "mse"``, the authors' setting).
    """
    if output != "mse":
        raise ConfigError(f"dendritic_model builds an MSE-output chain, got output {output!r}")
    arch = tuple(int(n) for n in arch)
    names = ["x"] + [f"h{i}" for i in range(1, len(arch) - 1)] + ["out"]
    return {
        "layers": [{"name": n, "shape": [s]} for n, s in zip(names, arch)],
        "connections": [{"kind": "dendritic", "pre": a, "post": b, **options} for a, b in zip(names[:-1], names[1:])],
        "costs": [{"kind": "mse", "layer": "out"}],
    }


#: the CLI flag of each branch option (``override_branches``)
BRANCH_FLAGS = {"basal_branches": "--basal-branches", "apical_branches": "--apical-branches",
                "branch_sparsity": "--branch-sparsity", "apical_scale": "--apical-scale"}


def override_branches(config, **options):
    """``config`` with ``options`` (None: keep) set on every dendritic connection; ConfigError if it has none."""
    from .config import Config

    given = {k: v for k, v in options.items() if v is not None}
    if not given:
        return config
    bad = set(given) - set(BRANCH_FLAGS)
    if bad:
        raise ConfigError(f"override_branches takes {', '.join(BRANCH_FLAGS)}, got {', '.join(sorted(bad))}")
    d = config.to_dict()
    hit = [c for c in d["model"]["connections"] if c["kind"] == "dendritic"]
    if not hit:
        flags = ", ".join(BRANCH_FLAGS[k] for k in given)
        raise ConfigError(f"{flags}: the model has no dendritic connection (see models/*_dendritic.toml)")
    for c in hit:
        c.update(given)
    return Config.from_dict(d)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """cos(a, b) = a . b / (|a| |b|) over all entries (nan if either is zero)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.vdot(a, b)) / (na * nb) if na > 0 and nb > 0 else float("nan")


def ep_bptt_alignment(net, x, y, *, t1: int = 300, t2: int = 100, beta: float = 1e-3, nudging: str = "symmetric",
                      backend=None) -> list[dict[str, float]]:
    """Cosine of the EP update with the BPTT gradient of the same net, per layer and per part.

    EP: the algorithm's estimate (:class:`neuro_hts.algorithms.EP`, ``t1`` free steps,
    ``t2`` nudged); BPTT: :func:`neuro_hts.bptt.bptt_gradients` through the ``t1`` free
    steps. One dict per layer: ``"layer"`` (all its parameters, the bias included when it
    is learned) and, for a dendritic connection, ``basal_weight``, ``basal_bias``,
    ``apical_weight`` (the apical branches of the layer below). There is no single energy,
    so this is an alignment figure, not an equality (docs/DENDRITIC.md).
    """
    from .algorithms import EP
    from .backends import get_backend
    from .bptt import bptt_gradients
    from .engines import FloatEngine

    engine = FloatEngine(None, backend=backend or get_backend("numpy"))
    _, gW, gb = engine.gradients(net, x, y, EP(t1=t1, t2=t2, beta=beta, nudging=nudging))
    bW, bb, _ = bptt_gradients(net, x, y, t1)
    out = []
    for l, (conn, g, h) in enumerate(zip(net.connections(), gW, bW)):
        both_g, both_h = [g.ravel()], [h.ravel()]
        if conn.post_bias:
            both_g.append(gb[l].ravel())
            both_h.append(bb[l].ravel())
        row = {"layer": cosine(np.concatenate(both_g), np.concatenate(both_h))}
        if isinstance(conn, Dendritic):
            hp = conn.parts(h)
            row.update({k: cosine(v, hp[k]) for k, v in conn.parts(g).items()})
        out.append(row)
    return out
