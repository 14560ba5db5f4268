"""Deploy bundle files: a :class:`~.quantize.DeployBundle` as HDF5 (layout in docs/FORMAT.md).

Written atomically (temporary file + rename); :func:`load_bundle` refuses foreign,
truncated or unknown-version files with one-line :class:`~neuro_hts.errors.RunFileError`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from .._atomic import atomic_path, file_sha256
from .._h5 import open_checked
from ..errors import ConfigError, RunFileError
from .drc import FIXED_KINDS, Violation, check_deployable, check_graded_spikes, check_pool_area, core_slices
from .quantize import DeployBundle, LayerBundle, _frozen, activation_frac_bits, state_frac_bits
from .target import target_from_dict

__all__ = ["BUNDLE_FORMAT", "BUNDLE_SCHEMA_VERSION", "file_sha256", "save_bundle", "load_bundle", "bundle_violations"]

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "neuro-hts-bundle"
BUNDLE_SCHEMA_VERSION = 4  # 4: conv2d layers (4-D mantissas, per-channel biases); 3: + the network's typed parts;
#                            2: biases in state units (1: accumulator units)
#: versions load_bundle reads (2: its parts are the dense chain of its layers; 3: a dense chain)
BUNDLE_READ_VERSIONS = (2, 3, 4)

_SOURCE_KEYS = ("run_path", "run_sha256", "run_config", "epochs_completed")
#: optional source attributes (absent in bundles written before they existed: "")
_OPTIONAL_SOURCE_KEYS = ("run_status", "run_message")


def _target_json(target) -> str:
    d = dataclasses.asdict(target)
    d.pop("source", None)
    return json.dumps(d, sort_keys=True)


def save_bundle(path: str | Path, bundle: DeployBundle) -> Path:
    """Write ``bundle`` to ``path`` atomically; returns the path."""
    import h5py

    path = Path(path)
    src = bundle.source or {}
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = BUNDLE_FORMAT
            f.attrs["schema_version"] = np.int64(BUNDLE_SCHEMA_VERSION)
            f.attrs["target_name"] = bundle.target.name
            f.attrs["target"] = _target_json(bundle.target)
            f.attrs["run_path"] = str(src.get("run_path", ""))
            f.attrs["run_sha256"] = str(src.get("run_sha256", ""))
            f.attrs["run_config"] = str(src.get("run_config", ""))
            f.attrs["epochs_completed"] = np.int64(src.get("epochs_completed", -1))
            for k in _OPTIONAL_SOURCE_KEYS:
                if k in src:
                    f.attrs[k] = str(src[k])
            f.attrs["profile_mode"] = bool(bundle.profile_mode)
            f.attrs["rounding"] = bundle.rounding
            f.attrs["network"] = json.dumps(bundle.spec.to_tables(), sort_keys=True)
            layers = f.create_group("layers")
            layers.attrs["n_layers"] = np.int64(len(bundle.layers))
            layers.attrs["form"] = bundle.form
            layers.attrs["activation"] = bundle.activation
            layers.attrs["output"] = bundle.output
            layers.attrs["activation_frac_bits"] = np.int64(bundle.activation_frac_bits)
            layers.attrs["state_frac_bits"] = np.int64(bundle.state_frac_bits)
            for lb in bundle.layers:
                g = layers.create_group(str(lb.index))
                g.attrs["weight_exponent"] = np.int64(lb.weight_exponent)
                g.create_dataset("weight_mantissa", data=np.asarray(lb.weight_mantissa, dtype=np.int64))
                g.create_dataset("bias", data=np.asarray(lb.bias, dtype=np.int64))
                g.create_dataset("decay", data=np.asarray(lb.decay, dtype=np.int64))
                g.create_dataset("dt", data=np.asarray(lb.dt, dtype=np.float64))
                if lb.decay_unbinned is not None:
                    g.create_dataset("decay_unbinned", data=np.asarray(lb.decay_unbinned, dtype=np.int64))
    logger.debug("saved bundle %s for target %s", path, bundle.target.name)
    return path


def load_bundle(path: str | Path, *, check: bool = True) -> DeployBundle:
    """Read a bundle file; raise RunFileError with one clear line if it is not a valid one.

    ``check`` (default): also run the target's value-range and design rules on the integers
    (:func:`~neuro_hts.hardware.bundle.bundle_violations`) and refuse, naming every broken rule
    on one line, a bundle its own target cannot run (a hand-edited or foreign file).
    """
    path = Path(path)
    with open_checked(path, BUNDLE_FORMAT, BUNDLE_READ_VERSIONS, "bundle") as f:
        try:
            target = target_from_dict(json.loads(str(f.attrs["target"])), source=f"{path}:target")
        except (ConfigError, json.JSONDecodeError) as exc:
            raise RunFileError(f"{path}: invalid stored target: {exc}") from None
        la = f["layers"].attrs
        layers = []
        for i in range(1, int(la["n_layers"]) + 1):
            g = f["layers"][str(i)]
            unb = _frozen(g["decay_unbinned"][()], np.int64) if "decay_unbinned" in g else None
            wm = g["weight_mantissa"][()]
            if wm.ndim not in (2, 4) or not np.issubdtype(wm.dtype, np.integer):
                raise RunFileError(f"{path}: layer {i}: weight_mantissa must be a 2-D (dense) or 4-D (conv2d) "
                                   "integer array")
            for name in ("bias", "decay") + (("decay_unbinned",) if "decay_unbinned" in g else ()):
                if not np.issubdtype(g[name].dtype, np.integer):
                    raise RunFileError(f"{path}: layer {i}: {name} must be an integer array, got {g[name].dtype}")
            layers.append(LayerBundle(
                index=i,
                weight_mantissa=_frozen(wm, np.int64),
                weight_exponent=int(g.attrs["weight_exponent"]),
                bias=_frozen(g["bias"][()], np.int64),
                decay=_frozen(g["decay"][()], np.int64),
                dt=_frozen(g["dt"][()], np.float64),
                decay_unbinned=unb,
            ))
        source = {k: f.attrs[k] for k in _SOURCE_KEYS}
        source = {
            "run_path": str(source["run_path"]),
            "run_sha256": str(source["run_sha256"]),
            "run_config": str(source["run_config"]),
            "epochs_completed": int(source["epochs_completed"]),
            **{k: str(f.attrs[k]) for k in _OPTIONAL_SOURCE_KEYS if k in f.attrs},
        }
        bundle = DeployBundle(
            target=target,
            layers=tuple(layers),
            form=str(la["form"]),
            activation=str(la["activation"]),
            output=str(la["output"]),
            activation_frac_bits=int(la["activation_frac_bits"]),
            state_frac_bits=int(la["state_frac_bits"]),
            profile_mode=bool(f.attrs["profile_mode"]),
            rounding=str(f.attrs["rounding"]),
            source=source,
        )
        version = int(f.attrs["schema_version"])
        if version >= 3:
            network = _check_network(path, str(f.attrs["network"]), bundle, version)
            if network is not None:
                bundle = dataclasses.replace(bundle, network=network)
        if bundle.network is None and any(np.ndim(lb.weight_mantissa) != 2 for lb in bundle.layers):
            raise RunFileError(f"{path}: 4-D weight mantissas in a bundle without conv2d connections")
    if check:
        violations = bundle_violations(bundle)
        if violations:
            raise RunFileError(f"{path}: the bundle breaks its target {target.name}'s rules: "
                               + "; ".join(map(str, violations)))
    return bundle


def _check_network(path, text: str, bundle: DeployBundle, version: int):
    """The stored parts must be what this version deploys; returns them (None: the dense chain of the layers).

    Version 3 holds dense chains only; version 4 also chains of conv2d and dense
    connections, whose parameter shapes must then fit the stored arrays.
    """
    from ..spec import NetworkSpec

    try:
        spec = NetworkSpec.from_tables(**json.loads(text))
    except (ConfigError, json.JSONDecodeError, TypeError) as exc:
        raise RunFileError(f"{path}: invalid stored network: {exc}") from None
    if version < 4 or spec.is_dense:
        reasons = spec.dense_violations(bundle.activation)
        if reasons:
            raise RunFileError(f"{path}: this neuro-hts deploys dense chains only: " + "; ".join(reasons))
        if spec != bundle.spec:
            raise RunFileError(f"{path}: the stored network does not match the bundle's layers {bundle.arch}")
        return None
    other = sorted({c.kind for c in spec.connections} - set(FIXED_KINDS))
    reasons = [f"connection kind(s) {', '.join(other)}"] if other else spec.chain_violations(bundle.activation)
    if reasons:
        raise RunFileError(f"{path}: this neuro-hts deploys chains of conv2d and dense connections only: "
                           + "; ".join(reasons))
    if len(spec.connections) != len(bundle.layers):
        raise RunFileError(f"{path}: the stored network has {len(spec.connections)} connections for "
                           f"{len(bundle.layers)} layers")
    return spec


def _first(bad: np.ndarray, values: np.ndarray) -> str:
    i = int(np.flatnonzero(bad.ravel())[0])
    return f"{int(bad.sum())} value(s), first [{i}] = {values.ravel()[i]}"


def bundle_violations(bundle) -> list[Violation]:
    """Every way a deploy bundle's integers break its own target (a hand-edited or third-party bundle).

    Checked per layer: array shapes chain; weight mantissas in ``[-2**mantissa_bits,
    2**mantissa_bits - lsb]`` and even on an even-only target; the exponent within
    ``[exponent_min, exponent_max]``; decays (and unbinned decays) in ``[1, 2**decay.bits]``;
    biases within ``state.input_bits`` (signed); dt finite in (0, 1]; the layer size and the
    decay profiles per core. For the bundle: the fraction bits the target implies, graded
    spikes and a deployable form/output (docs/FORMAT.md, "Validation on load"); the rules shared with the network checks
    come from :mod:`.drc`.
    """
    t = bundle.target
    ws = t.weights
    lo, hi = -(1 << ws.mantissa_bits), (1 << ws.mantissa_bits) - ws.lsb
    bias_lim = (1 << (t.state.input_bits - 1)) - 1
    scale = t.decay.scale
    out: list[Violation] = []
    prev = None
    parts = _conv_parts(bundle)
    for lb in bundle.layers:
        l = lb.index
        wm = np.asarray(lb.weight_mantissa)
        if parts is not None:  # a network with conv2d layers: shapes from its parts
            want_w, n, n_bias = parts[l - 1]
            if wm.shape != want_w:
                out.append(Violation("shape", l, f"weight_mantissa has shape {wm.shape}, expected {want_w}"))
                continue
        elif wm.ndim != 2:
            out.append(Violation("shape", l, f"weight_mantissa has shape {wm.shape}, expected 2-D"))
            continue
        else:
            n = n_bias = wm.shape[0]
            if prev is not None and wm.shape[1] != prev:
                out.append(Violation("shape", l, f"weight_mantissa takes {wm.shape[1]} inputs, layer {l - 1} has {prev}"))
            prev = n
        for name, a, m in (("bias", lb.bias, n_bias), ("decay", lb.decay, n), ("dt", lb.dt, n)):
            if np.shape(a) != (m,):
                out.append(Violation("shape", l, f"{name} has shape {np.shape(a)}, expected ({m},)"))
        if lb.decay_unbinned is not None and np.shape(lb.decay_unbinned) != (n,):
            out.append(Violation("shape", l, f"decay_unbinned has shape {np.shape(lb.decay_unbinned)}, expected ({n},)"))
        fan_in = int(np.prod(wm.shape[1:]))
        if t.limits.max_fan_in > 0 and fan_in > t.limits.max_fan_in:
            out.append(Violation("fan_in", l, f"a neuron receives {fan_in} synapses, {t.name} allows "
                                 f"{t.limits.max_fan_in}"))
        bad = (wm < lo) | (wm > hi)
        if bad.any():
            out.append(Violation("weight_range", l, f"weight mantissas outside [{lo}, {hi}] of {t.name}: {_first(bad, wm)}"))
        if ws.even:
            odd = (wm % 2) != 0
            if odd.any():
                out.append(Violation("weight_even", l, f"{t.name} keeps even weight mantissas only: {_first(odd, wm)}"))
        e = int(lb.weight_exponent)
        if not ws.exponent_min <= e <= ws.exponent_max:
            out.append(Violation("weight_exponent", l, f"weight exponent {e} outside [{ws.exponent_min}, "
                                 f"{ws.exponent_max}] of {t.name}"))
        for name, d in (("decay", lb.decay), ("decay_unbinned", lb.decay_unbinned)):
            if d is None or np.shape(d) != (n,):
                continue
            d = np.asarray(d)
            bad = (d < 1) | (d > scale)
            if bad.any():
                out.append(Violation("decay_range", l, f"{name} outside [1, {scale}] of the {t.decay.bits}-bit decays: "
                                     f"{_first(bad, d)}"))
        b = np.asarray(lb.bias)
        if b.shape == (n_bias,):
            bad = np.abs(b) > bias_lim
            if bad.any():
                out.append(Violation("bias_range", l, f"biases outside the {t.state.input_bits}-bit synaptic input "
                                     f"(|bias| <= {bias_lim}): {_first(bad, b)}"))
        dt = np.asarray(lb.dt, dtype=np.float64)
        if dt.shape == (n,):
            bad = ~np.isfinite(dt) | (dt <= 0) | (dt > 1)
            if bad.any():
                out.append(Violation("dt_range", l, f"dt outside (0, 1]: {_first(bad, dt)}"))
        lim = t.limits
        if lim.cores > 0 and lim.neurons_per_core > 0 and n > lim.cores * lim.neurons_per_core:
            out.append(Violation("layer_size", l, f"{n} neurons exceed {lim.cores} cores x {lim.neurons_per_core} neurons"))
        if lim.decay_profiles_per_core > 0 and np.shape(lb.decay) == (n,):
            d = np.asarray(lb.decay)
            worst = max(np.unique(d[sl]).size for sl in core_slices(n, lim.neurons_per_core))
            if worst > lim.decay_profiles_per_core:
                out.append(Violation("decay_profiles", l, f"a core holds {worst} distinct decays, {t.name} allows "
                                     f"{lim.decay_profiles_per_core}"))
    if bundle.activation_frac_bits != activation_frac_bits(t):
        out.append(Violation("frac_bits", None, f"activation_frac_bits {bundle.activation_frac_bits} is not the "
                             f"{activation_frac_bits(t)} that {t.name} implies"))
    if bundle.state_frac_bits != state_frac_bits(t):
        out.append(Violation("frac_bits", None, f"state_frac_bits {bundle.state_frac_bits} is not the "
                             f"{state_frac_bits(t)} that {t.name} implies"))
    if bundle.rounding not in ("nearest", "stochastic"):
        out.append(Violation("rounding", None, f"rounding {bundle.rounding!r} is not 'nearest' or 'stochastic'"))
    out.extend(check_graded_spikes(bundle, t))
    out.extend(check_deployable(bundle, t))
    if bundle.network is not None:
        out.extend(check_pool_area(bundle, t))
    return out


def _conv_parts(bundle):
    """Per layer (mantissa shape, units, biases) from the parts of a network with conv2d layers; None for a dense chain."""
    if bundle.network is None:
        return None
    from ..connections import CONNECTIONS

    shapes = bundle.shapes
    out = []
    for l, (kind, opts) in enumerate(bundle.connection_options()):
        pre, post = shapes[l], shapes[l + 1]
        want = CONNECTIONS.get(kind).param_shapes(pre, post, **opts)["weight"]
        n = int(np.prod(post))
        out.append((tuple(want), n, post[0] if len(post) == 3 else n))
    return out
