"""The Lava back-end: HTS-EP networks as Lava processes (``floating_pt`` and ``fixed_pt``).

Importing this package does NOT import Lava; the first use of :func:`run_lava` or
:func:`run_inference` (or an import of :mod:`neuro_hts.lava.proc.hts`) does, after
installing :mod:`neuro_hts.lava_compat`. Importing Lava sets multiprocessing's start
method to ``fork`` for the whole program, which is why nothing else in neuro_hts imports it.
"""

from .network import (
    CONV_ROUTES,
    InferenceResult,
    LavaConnection,
    LavaConvConnection,
    LavaRun,
    lava_connections,
    run_inference,
    run_lava,
)

__all__ = ["CONV_ROUTES", "InferenceResult", "LavaConnection", "LavaConvConnection", "LavaRun", "import_lava",
           "lava_connections", "run_inference", "run_lava"]


def import_lava():
    """Import Lava and this package's Processes now (returns the module of the Processes).

    Lava sets multiprocessing's start method to ``fork`` on import and raises if anything
    fixed the start method before (creating a tqdm bar does), so a program that uses both
    calls this first.
    """
    from .proc import hts

    return hts
