"""Connection kinds: what a connection adds to the primitive Phi, and everything derived from it.

A connection links a ``pre`` layer to a ``post`` layer. Its term of the primitive is THE
definition (Laborieux et al.'s ``Phi``, checked here by finite differences instead of
trusted to autograd)::

    phi(r_pre, r_post) = < r_post, A(r_pre) r_pre >     per sample, A the connection's linear map

and the rest follows from it: the drive it adds to ``post`` (d phi / d r_post), the
feedback it sends to ``pre`` (d phi / d r_pre; symmetric connections only), its
parameters' gradient (the EP contrast's input) and the vector-Jacobian product BPTT
needs. Biases belong to layers, not connections (a layer's term ``r . b``).

:class:`LinearConnection` derives all of that from three methods, ``apply(v, ctx) = A v``,
``apply_T(u, ctx) = A^T u`` and ``outer(u, v, ctx) = d <u, A v> / d params``, plus
``context(r_pre)``, what the map A depends on at the pre state ``r_pre``:

* a dense matrix and a convolution with average pooling (or none) do not depend on the
  state: their context is ``None`` and A is linear;
* a convolution with max pooling depends on it through the argmax of each pooling window
  of ``conv(r_pre)``, recomputed from the pre state at every call. A is then piecewise
  linear: constant between argmax changes, so d phi / d r_pre = A(r_pre)^T r_post and
  d phi / d W = outer(r_post, r_pre) wherever every window's maximum is unique (almost
  everywhere). ``apply_T`` and ``outer`` therefore take the context of the r_pre that
  defines the argmax: the feedback a post layer sends down is scattered to the argmax
  positions of the *current* pre state.

A connection whose feedback is not the transpose of its forward map (dendritic EP's
apical branches) sets ``symmetric = False`` and does not provide ``drive_pre``: its
:meth:`Connection.feedback` comes from its own feedback weights, and its ``phi`` is the
sum of a term in the post layer's primitive and one in the pre layer's (there is one
primitive per layer, not one energy; docs/DENDRITIC.md).

Registered kinds (:data:`CONNECTIONS`; ``neuro-hts list``): ``dense`` and ``conv2d``
(equations in docs/CONV.md), ``dendritic`` (:mod:`neuro_hts.dendritic`, docs/DENDRITIC.md). A kind declares its options (``OPTIONS``, the keys a
``[[model.connections]]`` table may carry besides kind/pre/post), checks them against the
layer shapes (:meth:`Connection.check`), says its parameter shapes and fan-in, and builds
itself from its weight (:meth:`Connection.build`).
Tests: tests/test_connections.py checks every registered kind against finite
differences of ``phi`` and against the slow loops of tests/naive.py.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import ConfigError
from .registry import Registry

__all__ = ["Connection", "LinearConnection", "Dense", "Conv2d", "CONNECTIONS", "POOLINGS", "conv2d_out_shape"]


def _size(shape) -> int:
    n = 1
    for v in shape:
        n *= int(v)
    return n


class Connection:
    """Interface of a connection kind (shapes: batch B first)."""

    kind: ClassVar[str] = ""
    #: whether the feedback to ``pre`` is d phi / d r_pre (so EP's energy picture holds)
    symmetric: ClassVar[bool] = True
    #: option name -> default (None: required); the keys a config table may add
    OPTIONS: ClassVar[dict[str, Any]] = {}
    #: whether the post layer's bias b_post is a learned term of the primitive (a dendritic
    #: soma has none: its branches carry the biases); instances may override it
    post_bias: bool = True

    # ------------------------------------------------------------------ construction
    @classmethod
    def check(cls, options: dict, pre_shape: tuple[int, ...], post_shape: tuple[int, ...], where: str) -> dict:
        """Validated options with defaults filled in; ConfigError (one line, naming ``where``) otherwise."""
        bad = set(options) - set(cls.OPTIONS)
        if bad:
            raise ConfigError(f"{where}: unknown option(s) {', '.join(sorted(bad))} for kind {cls.kind!r}")
        return {k: options.get(k, v) for k, v in cls.OPTIONS.items()}

    @classmethod
    def place(cls, options: dict, pre_is_input: bool, where: str) -> dict:
        """Options completed with what depends on the connection's place in the chain (default: unchanged).

        ``pre_is_input``: the pre layer is the clamped input (it takes no feedback).
        """
        return options

    @classmethod
    def param_shapes(cls, pre_shape, post_shape, **options) -> dict[str, tuple[int, ...]]:
        """Shape of each learned array."""
        raise NotImplementedError

    @classmethod
    def fan_in(cls, pre_shape, post_shape, **options) -> int:
        """Inputs per post unit (the scale of the default initialisation)."""
        raise NotImplementedError

    @classmethod
    def build(cls, weight: np.ndarray, pre_shape, post_shape, **options) -> "Connection":
        """The connection around ``weight`` (a view: optimisers update it in place)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the interface
    def params(self) -> dict[str, np.ndarray]:
        """The learned arrays, by name (views: optimisers update them in place)."""
        raise NotImplementedError

    def drive_post(self, r_pre: np.ndarray) -> np.ndarray:
        """What the connection adds to ``post``'s drive: d phi / d r_post, (B, *post_shape)."""
        raise NotImplementedError

    def drive_pre(self, r_post: np.ndarray, r_pre: np.ndarray) -> np.ndarray:
        """Feedback to ``pre``: d phi / d r_pre at (r_pre, r_post), (B, *pre_shape) (symmetric connections)."""
        raise NotImplementedError

    def feedback(self, r_post: np.ndarray, r_pre: np.ndarray) -> np.ndarray:
        """What the connection adds to ``pre``'s drive, d phi_pre / d r_pre (B, *pre_shape).

        A symmetric connection's feedback is :meth:`drive_pre`; a non-symmetric one (dendritic
        apical branches) computes it from its own feedback weights.
        """
        return self.drive_pre(r_post, r_pre)

    def phi(self, r_pre: np.ndarray, r_post: np.ndarray) -> np.ndarray:
        """The connection's term of the primitive, per sample (B,).

        A non-symmetric connection has a term in each of two layers' primitives:
        ``phi = phi_post + phi_pre`` (:meth:`phi_post`, :meth:`phi_pre`).
        """
        raise NotImplementedError

    def phi_post(self, r_pre: np.ndarray, r_post: np.ndarray) -> np.ndarray:
        """The term of ``post``'s primitive, whose d / d r_post is :meth:`drive_post` (symmetric: phi)."""
        return self.phi(r_pre, r_post)

    def phi_pre(self, r_pre: np.ndarray, r_post: np.ndarray) -> np.ndarray:
        """The term of ``pre``'s primitive, whose d / d r_pre is :meth:`feedback` (symmetric: phi)."""
        return self.phi(r_pre, r_post)

    def param_grad(self, r_pre: np.ndarray, r_post: np.ndarray) -> dict[str, np.ndarray]:
        """d (sum_batch phi) / d params, by name."""
        raise NotImplementedError

    def param_grad_contrast(self, r_pre_a, r_post_a, r_pre_b, r_post_b) -> dict[str, np.ndarray]:
        """d (sum_batch phi) / d params at (a) minus at (b), by name; a kind may share work between them."""
        ga, gb = self.param_grad(r_pre_a, r_post_a), self.param_grad(r_pre_b, r_post_b)
        return {k: ga[k] - gb[k] for k in ga}

    def vjp(self, r_pre: np.ndarray, g_post: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Given the adjoint ``g_post`` of ``drive_post(r_pre)``: (adjoint of r_pre, adjoints of the params)."""
        raise NotImplementedError


class LinearConnection(Connection):
    """A connection whose drive is (piecewise) linear in ``r_pre``: phi = <r_post, A(r_pre) r_pre>.

    Subclasses implement :meth:`apply`, :meth:`apply_T`, :meth:`outer` and, when A
    depends on the pre state, :meth:`context`; the rest is derived here once.
    """

    def context(self, r_pre: np.ndarray):
        """What A depends on at the pre state ``r_pre`` (None: A does not depend on it)."""
        return None

    def apply(self, v: np.ndarray, ctx=None) -> np.ndarray:
        """A v for a batch of pre-shaped v (A fixed by ``ctx``; None: the context of v itself)."""
        raise NotImplementedError

    def apply_T(self, u: np.ndarray, ctx=None) -> np.ndarray:
        """A^T u for a batch of post-shaped u (A fixed by ``ctx``, the context of the pre state)."""
        raise NotImplementedError

    def outer(self, u: np.ndarray, v: np.ndarray, ctx=None) -> dict[str, np.ndarray]:
        """d (sum_batch <u, A v>) / d params, A's context held fixed (None: the context of v)."""
        raise NotImplementedError

    def drive_post(self, r_pre):
        return self.apply(r_pre, self.context(r_pre))

    def drive_pre(self, r_post, r_pre):
        return self.apply_T(r_post, self.context(r_pre))

    def phi(self, r_pre, r_post):
        h = self.drive_post(r_pre)
        return np.sum((r_post * h).reshape(h.shape[0], -1), axis=1)

    def param_grad(self, r_pre, r_post):
        return self.outer(r_post, r_pre, self.context(r_pre))

    def vjp(self, r_pre, g_post):
        ctx = self.context(r_pre)
        return self.apply_T(g_post, ctx), self.outer(g_post, r_pre, ctx)


#: connection kind -> class
CONNECTIONS: Registry = Registry("connection kind")


@CONNECTIONS.register("dense")
class Dense(LinearConnection):
    """Dense matrix W (n_post, n_pre): A v = W v, symmetric feedback W^T.

    A C x H x W pre layer is read as a vector of C*H*W values in C order (a flatten is a
    dense connection from an image layer); ``pre_shape`` gives the feedback that shape.
    """

    kind = "dense"
    symmetric = True

    def __init__(self, weight: np.ndarray, pre_shape: tuple[int, ...] | None = None):
        if np.ndim(weight) != 2:
            raise ConfigError(f"a dense connection needs a 2-D weight, got shape {np.shape(weight)}")
        if pre_shape is not None and _size(pre_shape) != weight.shape[1]:
            raise ConfigError(f"a dense weight {weight.shape} does not take a pre layer of shape {list(pre_shape)}")
        self.weight = weight
        self.pre_shape = tuple(pre_shape) if pre_shape is not None else (weight.shape[1],)

    @classmethod
    def check(cls, options, pre_shape, post_shape, where):
        opts = super().check(options, pre_shape, post_shape, where)
        if len(post_shape) != 1:
            raise ConfigError(f"{where}: a dense connection feeds a layer of shape [n], got {list(post_shape)} "
                              "(C x H x W layers need a convolution kind)")
        return opts

    @classmethod
    def param_shapes(cls, pre_shape, post_shape, **options):
        return {"weight": (_size(post_shape), _size(pre_shape))}

    @classmethod
    def fan_in(cls, pre_shape, post_shape, **options):
        return _size(pre_shape)

    @classmethod
    def build(cls, weight, pre_shape, post_shape, **options):
        return cls(weight, tuple(pre_shape))

    @classmethod
    def init(cls, n_pre: int, n_post: int, *, rng: np.random.Generator, scale: float = 1.0) -> "Dense":
        """W ~ U(-k, k), k = scale / sqrt(n_pre) (randomness explicit and keyword-only)."""
        k = scale / np.sqrt(n_pre)
        return cls(rng.uniform(-k, k, (n_post, n_pre)))

    def params(self):
        return {"weight": self.weight}

    def apply(self, v, ctx=None):
        """W v: (B, *pre_shape) -> (B, n_post)."""
        return v.reshape(v.shape[0], -1) @ self.weight.T

    def apply_T(self, u, ctx=None):
        """W^T u: (B, n_post) -> (B, *pre_shape)."""
        return (u @ self.weight).reshape(u.shape[0], *self.pre_shape)

    def outer(self, u, v, ctx=None):
        """sum_b u_b v_b^T: (n_post, n_pre)."""
        return {"weight": u.T @ v.reshape(v.shape[0], -1)}


#: pooling applied after a convolution
POOLINGS = ("none", "avg", "max")


def conv2d_out_shape(pre_shape, channels: int, kernel: int, stride: int, padding: int, pool: str, pool_size: int,
                     pool_stride: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(shape after the convolution, shape after the pooling) of a conv2d on a (C, H, W) layer.

    H_conv = (H + 2 padding - kernel) // stride + 1; H_pool = (H_conv - pool_size) // pool_stride + 1
    (no pooling: H_pool = H_conv); the same for W. A size < 1 means the layer is too small.
    """
    _, H, W = pre_shape
    hc, wc = (H + 2 * padding - kernel) // stride + 1, (W + 2 * padding - kernel) // stride + 1
    if pool == "none":
        return (channels, hc, wc), (channels, hc, wc)
    return (channels, hc, wc), (channels, (hc - pool_size) // pool_stride + 1, (wc - pool_size) // pool_stride + 1)


def _windows(a: np.ndarray, size: int, stride: int) -> np.ndarray:
    """View (B, C, Ho, Wo, size, size) of the size x size windows of a (B, C, H, W) array, every ``stride`` pixels."""
    return sliding_window_view(a, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]


def _scatter_windows(cols: np.ndarray, shape: tuple[int, ...], stride: int) -> np.ndarray:
    """The adjoint of :func:`_windows`: add each window value (B, C, Ho, Wo, k, k) back at its pixel of ``shape``."""
    out = np.zeros(shape, dtype=cols.dtype)
    _, _, ho, wo, k, _ = cols.shape
    for i in range(k):
        for j in range(k):
            out[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride] += cols[..., i, j]
    return out


@CONNECTIONS.register("conv2d")
class Conv2d(LinearConnection):
    """Cross-correlation with a kernel W (C_out, C_in, k, k), then pooling: A v = P(W * v).

    Options: ``kernel`` k (required), ``stride`` and ``padding`` (zeros) of the
    convolution, ``pool`` ``none`` / ``avg`` / ``max``, ``pool_size`` and ``pool_stride``
    (default: pool_size, non-overlapping windows). The post layer's shape is
    (C_out, H_pool, W_pool) (:func:`conv2d_out_shape`); it is not relaxed before pooling.

    With max pooling the context of a pre state r is, per window, the position of the
    maximum of (W * r) in it (the first one on a tie); a per-channel bias does not move it,
    so P(W * r + b) = P(W * r) + b (Laborieux et al.'s P_CNN) with the bias on the layer.
    """

    kind = "conv2d"
    symmetric = True
    OPTIONS = {"kernel": None, "stride": 1, "padding": 0, "pool": "none", "pool_size": 2, "pool_stride": None}

    def __init__(self, weight: np.ndarray, pre_shape, *, stride: int = 1, padding: int = 0, pool: str = "none",
                 pool_size: int = 2, pool_stride: int | None = None):
        if np.ndim(weight) != 4 or weight.shape[2] != weight.shape[3]:
            raise ConfigError(f"a conv2d connection needs a (C_out, C_in, k, k) weight, got shape {np.shape(weight)}")
        if len(pre_shape) != 3 or pre_shape[0] != weight.shape[1]:
            raise ConfigError(f"a conv2d weight {weight.shape} does not take a pre layer of shape {list(pre_shape)}")
        if pool not in POOLINGS:
            raise ConfigError(f"conv2d pool must be one of {', '.join(POOLINGS)}, got {pool!r}")
        self.weight = weight
        self.pre_shape = tuple(int(v) for v in pre_shape)
        self.stride, self.padding, self.pool = int(stride), int(padding), pool
        self.pool_size = int(pool_size)
        self.pool_stride = int(pool_stride) if pool_stride is not None else self.pool_size
        self.conv_shape, self.post_shape = conv2d_out_shape(self.pre_shape, weight.shape[0], weight.shape[2], self.stride,
                                                            self.padding, pool, self.pool_size, self.pool_stride)
        if min(self.post_shape) < 1:
            raise ConfigError(f"conv2d on a {list(self.pre_shape)} layer gives an empty output {list(self.post_shape)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def check(cls, options, pre_shape, post_shape, where):
        opts = super().check(options, pre_shape, post_shape, where)
        for k in ("kernel", "stride", "padding", "pool_size", "pool_stride"):
            v = opts[k]
            if v is None and k == "pool_stride":
                continue
            if v is None:
                raise ConfigError(f"{where}: conv2d needs option {k} = <integer>")
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "padding" else 1):
                raise ConfigError(f"{where}: conv2d {k} must be an integer >= {0 if k == 'padding' else 1}, got {v!r}")
        if opts["pool"] not in POOLINGS:
            raise ConfigError(f"{where}: conv2d pool must be one of {', '.join(POOLINGS)}, got {opts['pool']!r}")
        if opts["pool_stride"] is None:
            opts["pool_stride"] = opts["pool_size"]
        if len(pre_shape) != 3 or len(post_shape) != 3:
            raise ConfigError(f"{where}: conv2d links C x H x W layers, got {list(pre_shape)} -> {list(post_shape)}")
        conv, pooled = conv2d_out_shape(pre_shape, post_shape[0], opts["kernel"], opts["stride"], opts["padding"],
                                        opts["pool"], opts["pool_size"], opts["pool_stride"])
        if min(conv) < 1 or min(pooled) < 1 or tuple(post_shape) != pooled:
            raise ConfigError(f"{where}: conv2d (kernel {opts['kernel']}, stride {opts['stride']}, padding "
                              f"{opts['padding']}, pool {opts['pool']}) maps {list(pre_shape)} to {list(pooled)}, "
                              f"but the post layer has shape {list(post_shape)}")
        return opts

    @classmethod
    def param_shapes(cls, pre_shape, post_shape, **options):
        k = options["kernel"]
        return {"weight": (post_shape[0], pre_shape[0], k, k)}

    @classmethod
    def fan_in(cls, pre_shape, post_shape, **options):
        return pre_shape[0] * options["kernel"] ** 2

    @classmethod
    def build(cls, weight, pre_shape, post_shape, **options):
        opts = {k: v for k, v in options.items() if k != "kernel"}
        conn = cls(weight, pre_shape, **opts)
        if conn.post_shape != tuple(post_shape):
            raise ConfigError(f"conv2d maps {list(pre_shape)} to {list(conn.post_shape)}, not {list(post_shape)}")
        return conn

    def params(self):
        return {"weight": self.weight}

    # ------------------------------------------------------------------ the convolution
    def _patches(self, v: np.ndarray) -> np.ndarray:
        """im2col view (B, C_in, H_conv, W_conv, k, k) of the zero-padded pre state."""
        p = self.padding
        if p:
            v = np.pad(v, ((0, 0), (0, 0), (p, p), (p, p)))
        return _windows(v, self.weight.shape[2], self.stride)

    def conv(self, v: np.ndarray) -> np.ndarray:
        """(W * v)[b, o, y, x] = sum_{c, i, j} W[o, c, i, j] v_pad[b, c, y s + i, x s + j]: (B, *conv_shape)."""
        return np.einsum("bcyxij,ocij->boyx", self._patches(v), self.weight, optimize=True)

    def conv_T(self, g: np.ndarray) -> np.ndarray:
        """Adjoint of :meth:`conv` (a transposed convolution): (B, *conv_shape) -> (B, *pre_shape)."""
        cols = np.einsum("boyx,ocij->bcyxij", g, self.weight, optimize=True)
        C, H, W = self.pre_shape
        p = self.padding
        out = _scatter_windows(cols, (g.shape[0], C, H + 2 * p, W + 2 * p), self.stride)
        return out[:, :, p : p + H, p : p + W] if p else out

    def conv_outer(self, g: np.ndarray, v: np.ndarray) -> np.ndarray:
        """d sum_b <g, W * v> / dW = correlation of v with g: (C_out, C_in, k, k)."""
        return np.einsum("boyx,bcyxij->ocij", g, self._patches(v), optimize=True)

    # ------------------------------------------------------------------ the pooling
    def _argmax_weights(self, z: np.ndarray) -> np.ndarray:
        """Max pooling's context: one-hot weights (B, C, Hp, Wp, ps, ps) at the argmax of each window of ``z``.

        ``z`` is the convolved pre state; on a tie the first maximum (in C order) wins.
        """
        ps = self.pool_size
        C, hp, wp = self.post_shape
        win = _windows(z, ps, self.pool_stride).reshape(z.shape[0], C, hp, wp, ps * ps)
        w = np.zeros(win.shape, dtype=z.dtype)
        np.put_along_axis(w, np.argmax(win, axis=-1)[..., None], 1, axis=-1)
        return w.reshape(z.shape[0], C, hp, wp, ps, ps)

    def pool_apply(self, z: np.ndarray, ctx) -> np.ndarray:
        """P z, (B, *post_shape): each window's mean (avg), its value at the argmax in ``ctx`` (max), or z (none)."""
        if self.pool == "none":
            return z
        win = _windows(z, self.pool_size, self.pool_stride)
        if self.pool == "avg":
            return win.mean(axis=(-2, -1))
        return np.einsum("bcyxij,bcyxij->bcyx", win, ctx)

    def pool_T(self, u: np.ndarray, ctx) -> np.ndarray:
        """P^T u, (B, *conv_shape): each window's value spread evenly over it (avg) or put at its argmax (max)."""
        if self.pool == "none":
            return u
        ps = self.pool_size
        if self.pool == "avg":
            cols = np.broadcast_to((u / (ps * ps))[..., None, None], (*u.shape, ps, ps))
        else:
            cols = u[..., None, None] * ctx
        return _scatter_windows(cols, (u.shape[0], *self.conv_shape), self.pool_stride)

    # ------------------------------------------------------------------ LinearConnection
    def context(self, r_pre):
        """Max pooling: the argmax weights of conv(r_pre) (:meth:`_argmax_weights`); otherwise None."""
        if self.pool == "max":
            return self._argmax_weights(self.conv(r_pre))
        return None

    def _need(self, ctx, what: str):
        if self.pool == "max" and ctx is None:
            raise ValueError(f"conv2d with max pooling: {what} needs the context of the pre state (context(r_pre))")
        return ctx

    def apply(self, v, ctx=None):
        """A v = P(W * v): (B, *pre_shape) -> (B, *post_shape); max pooling at ``ctx`` (None: v's own argmax)."""
        z = self.conv(v)
        if self.pool == "max" and ctx is None:
            ctx = self._argmax_weights(z)
        return self.pool_apply(z, ctx)

    def drive_post(self, r_pre):
        """P(W * r_pre), the argmax taken from the same convolution (computed once)."""
        return self.apply(r_pre)

    def apply_T(self, u, ctx=None):
        """A^T u = W^T * P^T u: (B, *post_shape) -> (B, *pre_shape); max pooling scattered to the argmax in ``ctx``."""
        return self.conv_T(self.pool_T(u, self._need(ctx, "apply_T")))

    def outer(self, u, v, ctx=None):
        """d sum_b <u, P(W * v)> / dW = correlation of v with P^T u (the unpooled u); max: ``ctx`` or v's own argmax."""
        if self.pool == "max" and ctx is None:
            ctx = self.context(v)
        return {"weight": self.conv_outer(self.pool_T(u, ctx), v)}


CONNECTIONS.register_lazy("dendritic", "neuro_hts.dendritic:Dendritic",
                          "masked ReLU branches: basal from below, apical from above with their own weights")
