"""Exceptions of neuro-hts.

Every error a user can cause by bad input derives from :class:`NeuroHTSError`; the CLI
turns those into one line on stderr and exit code 2.
"""

from __future__ import annotations

__all__ = ["NeuroHTSError", "ConfigError", "DataError", "RunFileError", "DivergenceError"]


class NeuroHTSError(Exception):
    """Base class of the errors neuro-hts reports to users."""


class ConfigError(NeuroHTSError, ValueError):
    """An invalid configuration value, architecture, distribution or TOML file."""


class DataError(NeuroHTSError):
    """Missing, corrupt or unexpected data files."""


class RunFileError(NeuroHTSError):
    """A run file that is missing, truncated, foreign or of an unknown schema."""


class DivergenceError(NeuroHTSError):
    """Training produced non-finite states or weights."""
