"""A network as typed parts: layers, connections and costs (frozen descriptions).

``--arch 784-512-10`` is one instance: layers ``x`` (784, the clamped input), ``h1``
(512), ``out`` (10); dense connections ``x -> h1 -> out``; an MSE cost on ``out``. With
``output = "ce"`` the top layer is not relaxed: the cost is a softmax readout of the
last hidden layer with ``classes`` outputs, whose weights are the cost's parameters.

A TOML config may declare the parts explicitly instead of ``arch``::

    [[model.layers]]
    name = "x"
    shape = [784]
    [[model.layers]]
    name = "h1"
    shape = [512]
    [[model.connections]]
    kind = "dense"
    pre = "x"
    post = "h1"
    [[model.costs]]
    kind = "ce"
    layer = "h1"
    classes = 10

A convolutional network declares image layers ``shape = [C, H, W]`` and ``conv2d``
connections with their options (any key of the kind's ``OPTIONS`` besides kind/pre/post)::

    [[model.layers]]
    name = "x"
    shape = [1, 8, 8]
    [[model.layers]]
    name = "h1"
    shape = [4, 3, 3]
    [[model.connections]]
    kind = "conv2d"
    pre = "x"
    post = "h1"
    kernel = 3
    pool = "max"        # "none" (default), "avg" or "max"
    pool_size = 2       # pool_stride defaults to pool_size; stride 1 and padding 0 by default

then a dense connection from ``h1`` (read as 36 values: the flatten) to a layer ``[n]``.

Kinds come from the registries (:data:`neuro_hts.connections.CONNECTIONS`,
:data:`neuro_hts.costs.COSTS`); a new kind is accepted here the moment it registers. The
reference engines (NumPy backend, float arithmetic) run a chain of connections,
conv2d ones then dense ones, or dendritic ones (non-symmetric: docs/DENDRITIC.md), with
one cost on a top layer of shape [n]
(:meth:`NetworkSpec.chain_violations` names the rule a network breaks); the fast and
fixed-point paths run dense chains only (:meth:`NetworkSpec.dense_violations`), except
that the Numba backend also runs dendritic chains (its own kernels). What an
engine cannot run is refused with that reason, never approximated.
"""

from __future__ import annotations

from dataclasses import dataclass

from .connections import CONNECTIONS
from .costs import COSTS
from .errors import ConfigError

__all__ = ["LayerSpec", "ConnectionSpec", "CostSpec", "NetworkSpec"]


def _keys(table, allowed: set[str], what: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"[[model.{what}]] entries must be tables, got {table!r}")
    bad = set(table) - allowed
    if bad:
        raise ConfigError(f"unknown key(s) in [[model.{what}]]: {', '.join(sorted(bad))}")


@dataclass(frozen=True)
class LayerSpec:
    """A layer: its name, its shape ``(n,)`` or ``(C, H, W)``, and optionally its own activation."""

    name: str
    shape: tuple[int, ...]
    activation: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigError(f"[[model.layers]] name must be an identifier, got {self.name!r}")
        shape = tuple(self.shape) if isinstance(self.shape, (list, tuple)) else (self.shape,)
        if len(shape) not in (1, 3) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
            raise ConfigError(f"layer {self.name!r}: shape must be [n] or [C, H, W] of positive integers, got {self.shape!r}")
        object.__setattr__(self, "shape", shape)

    @property
    def size(self) -> int:
        n = 1
        for v in self.shape:
            n *= v
        return n


@dataclass(frozen=True)
class ConnectionSpec:
    """A connection of a registered kind from layer ``pre`` to layer ``post``, with its options.

    ``options``: the kind's options as given (a dict or (key, value) pairs; stored sorted),
    checked against the layer shapes by :meth:`NetworkSpec.options`.
    """

    kind: str
    pre: str
    post: str
    options: tuple = ()

    def __post_init__(self):
        CONNECTIONS.check(self.kind, "[[model.connections]] kind")
        opts = dict(self.options.items() if isinstance(self.options, dict) else self.options)
        bad = set(opts) - set(CONNECTIONS.get(self.kind).OPTIONS)
        if bad:
            raise ConfigError(f"unknown key(s) in [[model.connections]] {self.kind} {self.pre} -> {self.post}: "
                              f"{', '.join(sorted(bad))}")
        object.__setattr__(self, "options", tuple(sorted(opts.items())))

    @property
    def where(self) -> str:
        return f"connection {self.kind} {self.pre} -> {self.post}"

    def to_table(self) -> dict:
        return {"kind": self.kind, "pre": self.pre, "post": self.post, **dict(self.options)}


@dataclass(frozen=True)
class CostSpec:
    """A cost of a registered kind on ``layer`` (``classes``: a readout's number of outputs)."""

    kind: str
    layer: str
    classes: int | None = None

    def __post_init__(self):
        COSTS.check(self.kind, "[[model.costs]] kind")
        if self.classes is not None and (isinstance(self.classes, bool) or not isinstance(self.classes, int)
                                         or self.classes < 2):
            raise ConfigError(f"cost on {self.layer!r}: classes must be an integer >= 2, got {self.classes!r}")


@dataclass(frozen=True)
class NetworkSpec:
    """Typed layers, connections and costs; the first layer is the clamped input."""

    layers: tuple[LayerSpec, ...]
    connections: tuple[ConnectionSpec, ...]
    costs: tuple[CostSpec, ...]

    def __post_init__(self):
        names = [layer.name for layer in self.layers]
        if len(names) < 2:
            raise ConfigError("[[model.layers]]: a network needs an input layer and at least one more")
        if len(set(names)) != len(names):
            raise ConfigError(f"[[model.layers]]: layer names must be distinct, got {names}")
        for c in self.connections:
            for end in (c.pre, c.post):
                if end not in names:
                    raise ConfigError(f"[[model.connections]] {c.kind} {c.pre} -> {c.post}: no layer named {end!r}")
        if not self.costs:
            raise ConfigError("[[model.costs]]: a network needs at least one cost")
        for c in self.costs:
            if c.layer not in names:
                raise ConfigError(f"[[model.costs]] {c.kind}: no layer named {c.layer!r}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arch(cls, arch, output: str = "mse") -> "NetworkSpec":
        """The MLP of ``--arch``: x, h1, ..., out, dense chain, ``output`` cost on the top."""
        arch = tuple(arch)
        relaxed = arch[1:] if output == "mse" else arch[1:-1]
        names = ["x"] + [f"h{i}" for i in range(1, len(relaxed))] + (["out"] if output == "mse" else [f"h{len(relaxed)}"])
        layers = tuple(LayerSpec(n, (s,)) for n, s in zip(names, (arch[0], *relaxed)))
        conns = tuple(ConnectionSpec("dense", a, b) for a, b in zip(names[:-1], names[1:]))
        cost = CostSpec(output, names[-1], None if output == "mse" else arch[-1])
        return cls(layers, conns, (cost,))

    @classmethod
    def from_tables(cls, layers, connections, costs) -> "NetworkSpec":
        """From TOML arrays of tables (lists of dicts); unknown keys are errors."""
        ls, cs, ks = [], [], []
        for t in layers:
            _keys(t, {"name", "shape", "activation"}, "layers")
            ls.append(LayerSpec(t.get("name"), t.get("shape"), t.get("activation")))
        for t in connections:
            if isinstance(t, dict) and isinstance(t.get("kind"), str) and t["kind"] in CONNECTIONS:
                _keys(t, {"kind", "pre", "post", *CONNECTIONS.get(t["kind"]).OPTIONS}, "connections")
                opts = {k: v for k, v in t.items() if k not in ("kind", "pre", "post")}
            else:
                _keys(t, {"kind", "pre", "post"}, "connections")
                opts = {}
            cs.append(ConnectionSpec(t.get("kind"), t.get("pre"), t.get("post"), opts))
        for t in costs:
            _keys(t, {"kind", "layer", "classes"}, "costs")
            ks.append(CostSpec(t.get("kind"), t.get("layer"), t.get("classes")))
        return cls(tuple(ls), tuple(cs), tuple(ks))

    def to_tables(self) -> dict:
        """The inverse of :meth:`from_tables` (what a config stores)."""
        return {
            "layers": [{"name": l.name, "shape": list(l.shape), **({"activation": l.activation} if l.activation else {})}
                       for l in self.layers],
            "connections": [c.to_table() for c in self.connections],
            "costs": [{"kind": c.kind, "layer": c.layer, **({"classes": c.classes} if c.classes else {})}
                      for c in self.costs],
        }

    # ------------------------------------------------------------------ what runs
    def layer(self, name: str) -> LayerSpec:
        return next(layer for layer in self.layers if layer.name == name)

    def options(self, c: ConnectionSpec) -> dict:
        """Connection ``c``'s options checked against its layers' shapes, defaults filled in (ConfigError otherwise)."""
        kind = CONNECTIONS.get(c.kind)
        opts = kind.check(dict(c.options), self.layer(c.pre).shape, self.layer(c.post).shape, c.where)
        return kind.place(opts, c.pre == self.layers[0].name, c.where)

    def chain_violations(self, activation: str) -> list[str]:
        """Why the reference engines cannot run this network (empty: they can).

        It must be a chain in layer order of registered connections whose options fit the
        layer shapes (conv2d between C x H x W layers, then dense ones: a dense connection
        from an image layer reads it as a vector), with one cost on the top layer, of shape [n].
        """
        reasons = []
        names = [layer.name for layer in self.layers]
        for layer in self.layers:
            if layer.activation not in (None, activation):
                reasons.append(f"layer {layer.name!r}: a per-layer activation ({layer.activation}) differs from the model's ({activation})")
        want = [(names[i], names[i + 1]) for i in range(len(names) - 1)]
        got = [(c.pre, c.post) for c in self.connections]
        if got != want:
            reasons.append(f"connections {got} are not the chain {want} in layer order")
        for c in self.connections:
            try:
                self.options(c)
            except ConfigError as exc:
                reasons.append(str(exc))
        if len(self.costs) != 1 or self.costs[0].layer != names[-1]:
            reasons.append(f"costs {[(c.kind, c.layer) for c in self.costs]}: exactly one cost, on the top layer {names[-1]!r}")
        elif self.costs[0].kind == "ce" and self.costs[0].classes is None:
            reasons.append("a 'ce' readout cost needs classes = <number of outputs>")
        elif len(self.layers[-1].shape) != 1:
            reasons.append(f"cost {self.costs[0].kind!r} on layer {names[-1]!r} of shape {list(self.layers[-1].shape)}: "
                           "a cost reads a layer of shape [n]")
        return reasons

    def dense_violations(self, activation: str) -> list[str]:
        """Why this is not a chain of dense connections between layers of shape [n] (empty: it is)."""
        reasons = self.chain_violations(activation)
        for layer in self.layers:
            if len(layer.shape) != 1:
                reasons.append(f"layer {layer.name!r} has shape {list(layer.shape)}: C x H x W layers need the "
                               "NumPy reference (backend 'numpy', arith 'float')")
        other = sorted({c.kind for c in self.connections} - {"dense"})
        if other:
            reasons.append(f"connection kind(s) {', '.join(other)}: this path runs dense chains only")
        return reasons

    @property
    def is_dense(self) -> bool:
        """All layers of shape [n] and all connections dense (the fast and fixed-point paths' networks)."""
        return all(len(layer.shape) == 1 for layer in self.layers) and all(c.kind == "dense" for c in self.connections)

    def chain(self, activation: str) -> tuple[tuple[int, ...], str]:
        """``(arch, output)``: the layer sizes (C*H*W for an image layer), plus the classes of a
        readout; ConfigError naming every broken rule of :meth:`chain_violations` otherwise."""
        reasons = self.chain_violations(activation)
        if reasons:
            raise ConfigError("the engines cannot run this network: " + "; ".join(reasons))
        cost = self.costs[0]
        sizes = tuple(layer.size for layer in self.layers)
        if cost.kind == "mse":
            return sizes, "mse"
        return sizes + (cost.classes,), cost.kind
