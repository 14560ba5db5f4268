"""What is registered: every registry of the package and the built-in hardware targets.

``neuro-hts list`` prints :func:`catalog`. This module sits at the top of the package
(it imports the modules that fill the registries), so lower layers never import it.
"""

from __future__ import annotations

__all__ = ["catalog"]


def catalog() -> dict[str, list[tuple[str, str]]]:
    """``{kind: [(name, one-line description), ...]}`` for every registry and the hardware targets."""
    from . import activations, algorithms, connections, costs, data, distributions, dynamics, engines, learning  # noqa: F401
    from .backends import BACKENDS  # noqa: F401
    from .hardware.target import available_targets, load_target
    from .registry import all_registries

    out = {}
    for kind, reg in all_registries().items():
        out[kind] = [(name, reg.describe(name)) for name in reg.names()]
    out["hardware target"] = [(name, load_target(name).description) for name in available_targets()]
    return out
