"""Quantize a trained network for a hardware target: float network -> :class:`DeployBundle`.

The pipeline (as in Rockpool): design-rule checks (:mod:`.drc`) -> quantize -> bundle
file (:mod:`.bundle`). The input network is only read, never modified.

Integer conventions of a bundle (layer ``l``, ``F = activation_frac_bits``):

* weights: ``W ~= weight_mantissa * 2**weight_exponent`` (``fixed_point.quantize_weights``,
  one shared exponent per layer);
* activations (graded spike payloads) are fixed point with ``F`` fraction bits:
  ``a_int = round(a * 2**F)``, 1.0 -> ``2**F``. ``F = min(12, payload_bits - 2)``: 1.0 needs
  ``F + 1`` magnitude bits plus a sign bit in the payload (24-bit Loihi 2 payload: F = 12;
  8-bit generic payload: F = 6);
* states have ``state_frac_bits = min(12, state.bits - 12)`` fraction bits (24-bit state:
  12, leaving +-2**11 of integer range for pre-activations);
* biases: ``bias = round(b * 2**S)`` with ``S = state_frac_bits``, i.e. in STATE units, as
  a Loihi neuron's bias: it is added to the synaptic input after the Dense connection has
  shifted ``weight_mantissa @ a_int`` into state units (Lava's Dense carries no bias, so
  the bias lives in the neuron). A bias that does not fit ``state.input_bits`` (signed)
  is refused;
* decays: ``decay = round(dt * 2**decay_bits)`` per neuron (``fixed_point.dt_to_decay``).

Convolutional networks (docs/CONV.md): a conv2d layer's kernel (C_out, C_in, k, k) is
quantized like a dense matrix (mantissas of the same shape, ONE shared exponent), its
bias is per channel (C_out,), and its decays are per unit, flattened in C order like the
states (C*H*W,). The bundle then carries the network's parts (``DeployBundle.network``:
layer shapes, connection kinds and options) so that it describes itself.

Profile mode (targets with ``decay_profiles_per_core > 0``, e.g. Loihi 1: 32): each core
(consecutive ``neurons_per_core`` neurons) whose neurons need more distinct decays than
allowed gets them binned by a deterministic 1-D k-means (quantile start, Lloyd steps,
integer centres); both the binned ``decay`` and the original ``decay_unbinned`` are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..network import Network
from .drc import check_branch_dendrites, check_chain, core_slices, run_design_rules
from .fixed_point import dequantize, dt_to_decay, quantize_weights
from .target import HardwareTarget

__all__ = [
    "MAX_FRAC_BITS",
    "LayerBundle",
    "DeployBundle",
    "activation_frac_bits",
    "state_frac_bits",
    "bin_decays",
    "quantize_network",
]

#: Upper bound on fraction bits of states and activations (matches the 12-bit decays).
MAX_FRAC_BITS = 12


def _frozen(a, dtype) -> np.ndarray:
    out = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class LayerBundle:
    """Integer parameters of one layer (read-only arrays); ``index`` is 1-based."""

    index: int
    weight_mantissa: np.ndarray  # int64 (n_l, n_{l-1}); conv2d: (C_out, C_in, k, k)
    weight_exponent: int
    bias: np.ndarray  # int64 (n_l,), state units 2**-state_frac_bits; conv2d: (C_out,), one per channel
    decay: np.ndarray  # int64 (n_l,), the decays deployed (binned in profile mode); C order for C x H x W
    dt: np.ndarray  # float64 (n_l,), the source dt
    decay_unbinned: np.ndarray | None = None  # int64 (n_l,), profile mode only

    def weights_float(self) -> np.ndarray:
        return dequantize(self.weight_mantissa, self.weight_exponent)


@dataclass(frozen=True, eq=False)
class DeployBundle:
    """A network in a target's integer arithmetic, plus where it came from."""

    target: HardwareTarget
    layers: tuple[LayerBundle, ...]
    form: str
    activation: str
    output: str
    activation_frac_bits: int
    state_frac_bits: int
    profile_mode: bool = False
    rounding: str = "nearest"
    #: source identity (run file path, sha256, config JSON, epochs_completed); {} if none
    source: dict | None = None
    #: the network's typed parts (:class:`neuro_hts.spec.NetworkSpec`) of a network with
    #: C x H x W layers or conv2d connections; None: the dense chain of the layers' matrices
    network: object | None = None

    @property
    def is_dense(self) -> bool:
        return self.network is None

    @property
    def arch(self) -> tuple[int, ...]:
        """Layer sizes n_0 ... n_L (C*H*W for an image layer)."""
        if self.network is not None:
            return tuple(layer.size for layer in self.network.layers)
        return (self.layers[0].weight_mantissa.shape[1],) + tuple(lb.weight_mantissa.shape[0] for lb in self.layers)

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Layer shapes s_0 ... s_L without the batch ((n,) or (C, H, W))."""
        if self.network is not None:
            return tuple(tuple(layer.shape) for layer in self.network.layers)
        return tuple((n,) for n in self.arch)

    @property
    def spec(self):
        """The network as typed parts (:class:`neuro_hts.spec.NetworkSpec`): ``network``, or the dense chain with its cost."""
        from ..spec import NetworkSpec

        if self.network is not None:
            return self.network
        return NetworkSpec.from_arch(self.arch, self.output)

    def connection_options(self) -> list[tuple[str, dict]]:
        """Per weight layer, ``(kind, options)`` with defaults filled in ('dense', {} for a dense chain)."""
        if self.network is None:
            return [("dense", {}) for _ in self.layers]
        spec = self.network
        return [(c.kind, spec.options(c)) for c in spec.connections]

    def max_dt_change(self, layer: LayerBundle) -> float:
        """max |binned dt - original dt| in a layer, in units of dt (0 without profile mode)."""
        if layer.decay_unbinned is None:
            return 0.0
        diff = np.abs(layer.decay - layer.decay_unbinned)
        return float(diff.max(initial=0)) / self.target.decay.scale


def activation_frac_bits(target: HardwareTarget) -> int:
    """Fraction bits of graded activations: ``min(12, payload_bits - 2)`` (1.0 plus sign must fit)."""
    payload = target.spikes.payload_bits if target.spikes.graded else target.state.bits
    return max(0, min(MAX_FRAC_BITS, payload - 2))


def state_frac_bits(target: HardwareTarget) -> int:
    """Fraction bits of neuron states: ``min(12, state.bits - 12)``."""
    return max(0, min(MAX_FRAC_BITS, target.state.bits - 12))


def bin_decays(decays, max_levels: int, iterations: int = 50) -> np.ndarray:
    """Map integer decays onto at most ``max_levels`` integer levels (deterministic 1-D k-means).

    Centres start at the quantiles ``(k + 0.5) / max_levels`` of the values, then Lloyd
    steps (assign to the nearest centre, centre = mean) until stable; final centres are
    rounded to integers (they stay inside [min, max] of the input) and each decay takes its
    nearest centre (ties to the lower). Input with at most ``max_levels`` distinct values
    is returned unchanged (as a copy). Never modifies ``decays``.
    """
    d = np.asarray(decays, dtype=np.int64)
    if max_levels < 1:
        raise ConfigError(f"max_levels must be >= 1, got {max_levels}")
    uniq = np.unique(d)
    if uniq.size <= max_levels:
        return d.copy()
    x = d.astype(np.float64)
    centres = np.quantile(x, (np.arange(max_levels) + 0.5) / max_levels)
    for _ in range(iterations):
        centres = np.unique(centres)
        assign = np.argmin(np.abs(x[:, None] - centres[None, :]), axis=1)
        new = np.array([x[assign == k].mean() for k in range(centres.size) if np.any(assign == k)])
        if new.size == centres.size and np.allclose(new, centres):
            break
        centres = new
    levels = np.unique(np.rint(centres)).astype(np.int64)
    assign = np.argmin(np.abs(d[:, None] - levels[None, :]), axis=1)  # argmin: first (lower) on ties
    return levels[assign]


def _profile_bin(decay: np.ndarray, target: HardwareTarget) -> np.ndarray:
    out = decay.copy()
    for sl in core_slices(decay.size, target.limits.neurons_per_core):
        out[sl] = bin_decays(decay[sl], target.limits.decay_profiles_per_core)
    return out


def quantize_network(
    network: Network,
    target: HardwareTarget,
    profile_mode: bool = False,
    rounding: str = "nearest",
    rng: np.random.Generator | None = None,
    *,
    check_rules: bool = True,
    source: dict | None = None,
    exponent_rule: str = "max",
    percentile: float = 99.9,
) -> DeployBundle:
    """Quantize ``network`` for ``target`` (see the module docstring for the integer forms).

    Parameters
    ----------
    network : Network, never modified
    target : HardwareTarget
    profile_mode : bin each core's decays to ``decay_profiles_per_core`` levels (only
        where the target has such a limit); records ``decay_unbinned``
    rounding : 'nearest' or 'stochastic' (weights and biases); 'stochastic' needs ``rng``
    check_rules : run the design rules first and refuse (ConfigError listing every
        violation, '; '-separated) if any is broken. ``False`` quantizes whatever is
        numerically representable (e.g. to inspect Loihi 1 profile binning even though
        its binary spikes cannot carry graded activations).
    source : identity of the run file, stored in the bundle
    exponent_rule, percentile : how each layer's shared weight exponent is chosen
        (``fixed_point.choose_exponent``: ``max``, the default, saturates nothing;
        ``percentile`` and ``mse`` trade a few saturated weights for a finer grid). The
        chosen exponents are stored per layer, so the bundle needs no record of the rule.

    Raises
    ------
    ConfigError
        Design-rule violations, unrepresentable dt or weights, biases too large.
    """
    if rounding not in ("nearest", "stochastic"):
        raise ConfigError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    # whatever check_rules says: nothing else quantizes branch dendrites or other non-chains
    dense = check_branch_dendrites(network, target) or check_chain(network, target)
    if dense:
        raise ConfigError("design rules violated: " + "; ".join(map(str, dense)))
    if rounding == "stochastic" and not isinstance(rng, np.random.Generator):
        raise ConfigError("stochastic rounding needs an explicit numpy.random.Generator (rng=...)")
    if check_rules:
        violations = run_design_rules(network, target, profile_mode=profile_mode)
        if violations:
            raise ConfigError("design rules violated: " + "; ".join(map(str, violations)))
    binning = profile_mode and target.limits.decay_profiles_per_core > 0
    f_act = activation_frac_bits(target)
    s_frac = state_frac_bits(target)
    bias_lim = (1 << (target.state.input_bits - 1)) - 1
    ws = target.weights
    layers = []
    for l, (w, b, dt) in enumerate(zip(network.weights, network.biases, network.dts), start=1):
        dt = np.asarray(dt).reshape(-1)  # C order, as the states of a C x H x W layer
        q = quantize_weights(w, ws.mantissa_bits, ws.exponent_range, even=ws.even, rounding=rounding, rng=rng,
                             exponent_rule=exponent_rule, percentile=percentile)
        units = np.asarray(b, dtype=np.float64) * 2.0**s_frac  # exact: power-of-two scale
        if rounding == "nearest":
            bias = np.rint(units)
        else:
            low = np.floor(units)
            bias = low + (rng.random(units.shape) < (units - low))
        if not np.isfinite(bias).all() or np.any(np.abs(bias) > bias_lim):
            raise ConfigError(
                f"layer {l}: biases up to |b| = {float(np.max(np.abs(b))):.6g} do not fit the "
                f"{target.state.input_bits}-bit synaptic input with {s_frac} fraction bits"
            )
        try:
            decay = dt_to_decay(dt, target.decay.bits)
        except ConfigError as exc:
            raise ConfigError(f"layer {l}: {exc}") from None
        unbinned = None
        if binning:
            unbinned = decay
            decay = _profile_bin(decay, target)
        layers.append(LayerBundle(
            index=l,
            weight_mantissa=_frozen(q.mantissas, np.int64),
            weight_exponent=int(q.exponent),
            bias=_frozen(bias, np.int64),
            decay=_frozen(decay, np.int64),
            dt=_frozen(dt, np.float64),
            decay_unbinned=None if unbinned is None else _frozen(unbinned, np.int64),
        ))
    return DeployBundle(
        target=target,
        layers=tuple(layers),
        form=network.form,
        activation=network.activation,
        output=network.output,
        activation_frac_bits=f_act,
        state_frac_bits=s_frac,
        profile_mode=bool(profile_mode),
        rounding=rounding,
        source=dict(source) if source else {},
        network=None if network.is_dense else network.spec,
    )
