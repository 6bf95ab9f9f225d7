"""Exceptions for users: every one carries a single clear line naming the problem.

The CLI prints `str(error)` and exits with the error's `exit_code`: 2 for bad input, 3 for a
numerical check that failed or could not compare; Python callers catch `SuperoptError`.
"""

from __future__ import annotations


class SuperoptError(Exception):
    """Base of every error superopt reports to a user (one line, no traceback)."""

    exit_code = 2


class ModelError(SuperoptError):
    """The ONNX input cannot be read or is not a valid model (missing, truncated, cyclic...)."""


class ShapeError(SuperoptError):
    """Shapes do not fit: an input-shape override that does not match, or uninferable shapes."""


class RulesError(SuperoptError):
    """A rules file is missing, not JSON, or holds a malformed rule (the message names it)."""


class DeviceError(SuperoptError):
    """The requested execution device (e.g. CUDA) does not work here."""


class CheckError(SuperoptError):
    """The optimized model failed the numerical check against the original, or the check could
    not compare them; nothing was written."""

    exit_code = 3


class OutputError(SuperoptError):
    """The output path cannot be written."""


class UsageError(SuperoptError):
    """A command-line argument is invalid (unknown op name, k < 1, ...)."""
