"""The exceptions bdia raises, by whose fault they are.

A :class:`UsageError` means that what was asked for cannot be done, and its message says what is allowed:
a bad value or type, a missing file or package, a model that is not available, an output folder that
cannot be written. Each concrete class also derives from the built-in exception a caller would expect
(``ValueError``, ``TypeError``, ``FileNotFoundError``, ...), so ``except ValueError`` keeps working. The
command line turns a ``UsageError`` into one line and exit status 2; any other exception is a bug and
keeps its traceback.

:class:`NonFiniteError` is raised when a trajectory produces NaN or infinity (a model or schedule
problem, reported with the step where it happened).
"""

from __future__ import annotations

__all__ = ["UsageError", "InvalidValueError", "InvalidTypeError", "UnknownOptionError", "MissingFileError", "MissingPackageError",
           "NotWritableError", "ModelNotAvailableError", "NonFiniteError"]


class UsageError(Exception):
    """What the caller asked for cannot be done; the message says what is allowed."""


class InvalidValueError(UsageError, ValueError):
    """An argument has an allowed type but a value that is not allowed."""


class InvalidTypeError(UsageError, TypeError):
    """An argument has a type that is not allowed."""


class UnknownOptionError(UsageError, TypeError, ValueError):
    """An option that the method does not take (a ``TypeError`` like any unexpected keyword argument, and a
    ``ValueError`` when it comes from a parsed method spec such as ``"bdia:gama=0.5"``)."""


class MissingFileError(UsageError, FileNotFoundError):
    """A file or folder the caller named does not exist."""


class MissingPackageError(UsageError, ModuleNotFoundError):
    """An optional package that this feature needs is not installed; the message says which extra has it."""


class NotWritableError(UsageError, OSError):
    """An output folder cannot be written (checked before any long work starts)."""


class ModelNotAvailableError(UsageError, OSError):
    """A model id is neither a local folder nor in the Hugging Face cache, and cannot be downloaded."""


class NonFiniteError(FloatingPointError):
    """A trajectory produced NaN or infinity; the message names the step where it first appeared."""
