"""Design-rule checks: can a trained network be deployed on a hardware target?

Each rule is a small named function ``check_<rule>(network, target) -> list[Violation]``
that only reads the network; :func:`run_design_rules` runs them all and returns EVERY
violation at once (so a user fixes everything in one round, not one error per attempt).
The rule name of a violation is its function name without ``check_``.

Rules (see :data:`RULES`):

* ``branch_dendrites``: no Lava process exists for branch dendrites, so a network with a
  ``dendritic`` connection is refused (checked first; the other rules are not run on it);
* ``chain``: the fixed-point path runs a chain of conv2d and dense connections in layer
  order (conv2d between C x H x W layers first, then dense ones; one cost on the top
  layer, one activation for all layers: ``NetworkSpec.chain_violations``); anything else
  is refused here (the other rules read such a chain, so they are not run otherwise);
* ``pool_area``: an avg-pooling window's area must be a power of two (the integer sum of
  the window is divided by its area in the connection's right shift);
* ``fan_in``: every neuron receives at most ``limits.max_fan_in`` synapses (0: no limit
  known): ``C_in * k * k`` for a conv2d unit, ``n_{l-1}`` for a dense one;
* ``decay_range``: every dt must round to a decay in [1, 2**bits] (``dt_to_decay``);
* ``layer_size``: a layer (``C * H * W`` units for an image layer) must fit in
  ``neurons_per_core * cores`` neurons (0: unlimited);
* ``weight_range``: max|W| must be representable as ``max_int * 2**exponent_max``;
* ``decay_profiles``: at most ``decay_profiles_per_core`` distinct decays on each core
  (a layer, its units in C order, is split into consecutive cores of ``neurons_per_core`` neurons); skipped in
  profile mode, where the quantizer bins decays to the limit;
* ``graded_spikes``: HTS-EP neurons send graded activations; a binary-spike target
  (Loihi 1) cannot carry them.

:func:`check_deployable` (run by ``quantize``, ``compare`` and on every bundle load) adds
``deployable`` (a form or output without a fixed-point back-end) and ``softmax_readout``
(a softmax readout after conv2d layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..network import Network
from .target import HardwareTarget

__all__ = [
    "Violation",
    "RULES",
    "check_branch_dendrites",
    "check_chain",
    "check_pool_area",
    "check_fan_in",
    "layer_sizes",
    "check_decay_range",
    "check_layer_size",
    "check_weight_range",
    "check_decay_profiles",
    "check_graded_spikes",
    "core_slices",
    "run_design_rules",
    "check_deployable",
    "DEPLOYABLE_FORMS",
    "DEPLOYABLE_OUTPUTS",
]


@dataclass(frozen=True)
class Violation:
    """One broken design rule: ``rule`` name, 1-based ``layer`` (None: whole network), message."""

    rule: str
    layer: int | None
    message: str

    def __str__(self) -> str:
        where = "network" if self.layer is None else f"layer {self.layer}"
        return f"{self.rule}: {where}: {self.message}"


def _raw_decays(dt: np.ndarray, target: HardwareTarget) -> np.ndarray:
    """rint(dt * scale) as float (no validation; NaN stays NaN)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.rint(np.asarray(dt, dtype=np.float64) * float(target.decay.scale))


def core_slices(n_neurons: int, neurons_per_core: int) -> list[slice]:
    """Consecutive cores of ``neurons_per_core`` neurons (one core when it is 0: unlimited)."""
    if neurons_per_core <= 0 or n_neurons <= neurons_per_core:
        return [slice(0, n_neurons)]
    return [slice(i, min(i + neurons_per_core, n_neurons)) for i in range(0, n_neurons, neurons_per_core)]


def check_decay_range(network: Network, target: HardwareTarget) -> list[Violation]:
    """Every dt must round to a decay in [1, 2**bits]: 0 freezes a neuron, > scale overshoots."""
    out = []
    scale = target.decay.scale
    for l, dt in enumerate(network.dts, start=1):
        dt = np.asarray(dt).reshape(-1)  # C order for a C x H x W layer
        raw = _raw_decays(dt, target)
        bad = ~np.isfinite(raw) | (raw < 1) | (raw > scale)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            out.append(Violation(
                "decay_range", l,
                f"{int(bad.sum())} neuron(s) have a dt outside the {target.decay.bits}-bit decay range "
                f"(first: dt[{i}] = {float(dt[i]):.6g}; round(dt * {scale}) must lie in [1, {scale}])",
            ))
    return out


def check_layer_size(network: Network, target: HardwareTarget) -> list[Violation]:
    """A layer must fit in ``neurons_per_core * cores`` neurons (either 0: no limit)."""
    lim = target.limits
    if lim.cores <= 0 or lim.neurons_per_core <= 0:
        return []
    capacity = lim.cores * lim.neurons_per_core
    return [
        Violation("layer_size", l, f"{n} neurons exceed {lim.cores} cores x {lim.neurons_per_core} neurons = {capacity}")
        for l, n in enumerate(layer_sizes(network), start=1)
        if n > capacity
    ]


def layer_sizes(network: Network) -> tuple[int, ...]:
    """Units of each weight layer's post layer: n_l, or C * H * W for an image layer."""
    return tuple(int(n) for n in network.arch[1:])


def check_weight_range(network: Network, target: HardwareTarget) -> list[Violation]:
    """max|W| must be at most ``max_int * 2**exponent_max`` (and finite), else weights saturate."""
    ws = target.weights
    largest = math.ldexp(ws.max_int, ws.exponent_max)
    out = []
    for l, w in enumerate(network.weights, start=1):
        w = np.asarray(w)
        if not np.isfinite(w).all():
            out.append(Violation("weight_range", l, "weights contain NaN or infinity"))
            continue
        m = float(np.max(np.abs(w))) if w.size else 0.0
        if m > largest:
            out.append(Violation(
                "weight_range", l,
                f"max|w| = {m:.6g} exceeds the largest representable weight {ws.max_int} * 2**{ws.exponent_max} = {largest:.6g}",
            ))
    return out


def check_decay_profiles(network: Network, target: HardwareTarget) -> list[Violation]:
    """At most ``decay_profiles_per_core`` distinct decays per core (0: no limit)."""
    lim = target.limits
    if lim.decay_profiles_per_core <= 0:
        return []
    out = []
    for l, dt in enumerate(network.dts, start=1):
        raw = _raw_decays(np.asarray(dt).reshape(-1), target)
        worst, worst_core = 0, 0
        for c, sl in enumerate(core_slices(raw.size, lim.neurons_per_core)):
            n = np.unique(raw[sl][np.isfinite(raw[sl])]).size
            if n > worst:
                worst, worst_core = n, c
        if worst > lim.decay_profiles_per_core:
            out.append(Violation(
                "decay_profiles", l,
                f"core {worst_core} needs {worst} distinct decays, the target allows {lim.decay_profiles_per_core} "
                f"per core (use profile mode to bin them)",
            ))
    return out


def check_graded_spikes(network: Network, target: HardwareTarget) -> list[Violation]:
    """HTS-EP neurons send graded activations sigma(s); binary-spike targets cannot carry them."""
    if target.spikes.graded:
        return []
    return [Violation(
        "graded_spikes", None,
        f"target {target.name!r} has binary spikes only; activation {network.activation!r} needs graded spikes",
    )]


def check_branch_dendrites(network: Network, target: HardwareTarget | None = None) -> list[Violation]:
    """Dendritic connections (masked ReLU branches, own apical weights) have no Lava process and no fixed-point form."""
    spec = getattr(network, "spec", None)
    layers = [l for l, c in enumerate(spec.connections, start=1) if c.kind == "dendritic"] if spec is not None else []
    if not layers:
        return []
    return [Violation("branch_dendrites", layers[0], f"no Lava process exists for branch dendrites: dendritic "
                      f"connection(s) into layer(s) {layers} cannot be quantized or deployed")]


#: connection kinds the fixed-point path runs
FIXED_KINDS = ("dense", "conv2d")


def check_chain(network: Network, target: HardwareTarget | None = None) -> list[Violation]:
    """A chain of conv2d and dense connections in layer order with one cost on the top layer (a dense MLP always is)."""
    spec = getattr(network, "spec", None)
    if spec is None or spec.is_dense:
        return []
    other = sorted({c.kind for c in spec.connections} - set(FIXED_KINDS))
    if other:
        who = target.name if target is not None else "the fixed-point path"
        return [Violation("chain", None, f"{who} deploys chains of {' and '.join(FIXED_KINDS)} connections "
                          f"only, not {', '.join(other)}")]
    reasons = spec.chain_violations(network.activation)
    return [Violation("chain", None, f"the fixed-point path cannot run this network: {r}") for r in reasons]


def _conv_layers(network: Network):
    """(1-based layer, options) of each conv2d connection."""
    spec = getattr(network, "spec", None)
    if spec is None:
        return []
    return [(l, spec.options(c)) for l, c in enumerate(spec.connections, start=1) if c.kind == "conv2d"]


def check_pool_area(network: Network, target: HardwareTarget) -> list[Violation]:
    """An avg-pooling window's area pool_size**2 must be a power of two (the division is a right shift)."""
    out = []
    for l, o in _conv_layers(network):
        area = o["pool_size"] ** 2
        if o["pool"] == "avg" and area & (area - 1):
            out.append(Violation("pool_area", l, f"avg pooling over {o['pool_size']}x{o['pool_size']} = {area} pixels: "
                                 "the fixed-point window sum is divided by a shift, so the area must be a power of two"))
    return out


def fan_ins(network: Network) -> tuple[int, ...]:
    """Synapses per neuron of each weight layer: C_in * k * k (conv2d) or n_{l-1} (dense)."""
    return tuple(int(np.prod(np.shape(w)[1:])) for w in network.weights)


def check_fan_in(network: Network, target: HardwareTarget) -> list[Violation]:
    """Every neuron receives at most ``limits.max_fan_in`` synapses (0: no limit known)."""
    lim = target.limits.max_fan_in
    if lim <= 0:
        return []
    return [Violation("fan_in", l, f"a neuron receives {n} synapses, {target.name} allows {lim}")
            for l, n in enumerate(fan_ins(network), start=1) if n > lim]


#: name -> rule, in the order they run.
RULES = {
    "branch_dendrites": check_branch_dendrites,
    "chain": check_chain,
    "pool_area": check_pool_area,
    "fan_in": check_fan_in,
    "decay_range": check_decay_range,
    "layer_size": check_layer_size,
    "weight_range": check_weight_range,
    "decay_profiles": check_decay_profiles,
    "graded_spikes": check_graded_spikes,
}


def run_design_rules(network: Network, target: HardwareTarget, *, profile_mode: bool = False) -> list[Violation]:
    """All violations of all rules (empty list: deployable). ``profile_mode`` skips ``decay_profiles``."""
    out: list[Violation] = check_branch_dendrites(network, target) or check_chain(network, target)
    if out:  # the other rules read a chain of layers
        return out
    for name, rule in RULES.items():
        if name in ("branch_dendrites", "chain"):
            continue
        if profile_mode and name == "decay_profiles":
            continue
        out.extend(rule(network, target))
    return out


#: forms and outputs a deploy back-end (the fixed-point simulator, Lava) runs
DEPLOYABLE_FORMS = ("leaky", "energy")
DEPLOYABLE_OUTPUTS = ("mse", "ce")


def check_deployable(network, target: HardwareTarget) -> list[Violation]:
    """The forms and outputs with a fixed-point back-end (Numba simulator, Lava).

    The leaky and energy forms; an MSE output, or a softmax readout (``ce``) after a
    dense chain (the argmax of its integer logits; its nudged phase through the integer
    softmax ``fixed_point.softmax_int``).
    """
    out = []
    if network.form not in DEPLOYABLE_FORMS:
        out.append(Violation("deployable", None, f"form {network.form!r} has no fixed-point back-end "
                             f"(deploy runs {', '.join(DEPLOYABLE_FORMS)})"))
    if network.output not in DEPLOYABLE_OUTPUTS:
        out.append(Violation("deployable", None, f"output {network.output!r} has no fixed-point "
                             f"back-end (deploy runs {', '.join(DEPLOYABLE_OUTPUTS)})"))
    elif network.output == "ce" and not network.is_dense:
        out.append(Violation("softmax_readout", None, "a softmax readout after conv2d or image layers has no "
                             "fixed-point back-end (deploy runs it after dense chains)"))
    return out
