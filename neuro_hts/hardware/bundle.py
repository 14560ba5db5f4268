"""Deploy bundle files: a :class:`~.quantize.DeployBundle` as HDF5 (layout in docs/FORMAT.md).

Written atomically (temporary file + rename); :func:`load_bundle` refuses foreign,
truncated or unknown-version files with one-line :class:`~neuro_hts.errors.RunFileError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from .._h5 import open_checked
from ..errors import ConfigError, RunFileError
from .quantize import DeployBundle, LayerBundle, _frozen
from .target import target_from_dict

__all__ = ["BUNDLE_FORMAT", "BUNDLE_SCHEMA_VERSION", "file_sha256", "save_bundle", "load_bundle"]

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "neuro-hts-bundle"
BUNDLE_SCHEMA_VERSION = 3  # 3: + the network's typed parts; 2: biases in state units (1: accumulator units)
#: versions load_bundle reads (2: its parts are the dense chain of its layers)
BUNDLE_READ_VERSIONS = (2, 3)

_SOURCE_KEYS = ("run_path", "run_sha256", "run_config", "epochs_completed")
#: optional source attributes (absent in bundles written before they existed: "")
_OPTIONAL_SOURCE_KEYS = ("run_status", "run_message")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    (:func:`~neuro_hts.hardware.drc.bundle_violations`) and refuse, naming every broken rule
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
            if wm.ndim != 2 or not np.issubdtype(wm.dtype, np.integer):
                raise RunFileError(f"{path}: layer {i}: weight_mantissa must be a 2-D integer array")
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
        if int(f.attrs["schema_version"]) >= 3:
            _check_network(path, str(f.attrs["network"]), bundle)
    if check:
        from .drc import bundle_violations

        violations = bundle_violations(bundle)
        if violations:
            raise RunFileError(f"{path}: the bundle breaks its target {target.name}'s rules: "
                               + "; ".join(map(str, violations)))
    return bundle


def _check_network(path, text: str, bundle: DeployBundle) -> None:
    """The stored parts must be what this version deploys: the dense chain of the bundle's layers."""
    from ..spec import NetworkSpec

    try:
        spec = NetworkSpec.from_tables(**json.loads(text))
    except (ConfigError, json.JSONDecodeError, TypeError) as exc:
        raise RunFileError(f"{path}: invalid stored network: {exc}") from None
    reasons = spec.dense_violations(bundle.activation)
    if reasons:
        raise RunFileError(f"{path}: this neuro-hts deploys dense chains only: " + "; ".join(reasons))
    if spec != bundle.spec:
        raise RunFileError(f"{path}: the stored network does not match the bundle's layers {bundle.arch}")
