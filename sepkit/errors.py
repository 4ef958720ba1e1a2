"""sepkit's error classes: an exception of these means "the user can fix this".

The command line (:mod:`sepkit.cli`) turns a :class:`SepkitError` into one line and exit code 2;
any other exception is a bug in sepkit: exit 1, "internal error". Each class also subclasses the
built-in exception a library caller would catch (``ValueError``, ``TypeError``,
``RuntimeError``), so ``except ValueError`` keeps working.

This module imports nothing: every layer, the kernels included, may raise these.

- :class:`InputError` (ValueError): a wrong value, shape, size, rate or range of an argument.
- :class:`InputTypeError` (TypeError): an argument of the wrong type, dtype or device.
- :class:`ConfigError` (InputError): a recipe key or value.
- :class:`CheckpointError` (InputError): a checkpoint missing, corrupt or of another model.
- :class:`AudioError` (InputError): an audio file unreadable, empty, non-finite.
- :class:`DivergedError` (FloatingPointError): a non-finite training loss.
- :class:`BackendError` (RuntimeError): a kernel backend that cannot run here.
- :class:`DependencyError` (RuntimeError): a program or package this needs is not installed.
"""
from __future__ import annotations


class SepkitError(Exception):
    """Base of the errors the user can fix (bad input, file, config or environment)."""


class InputError(SepkitError, ValueError):
    """A wrong value of an argument: shape, size, sample rate, range; the message names it."""


class InputTypeError(SepkitError, TypeError):
    """An argument of the wrong type, dtype or device; the message names it."""


class ConfigError(InputError):
    """A recipe key or value is wrong; the message names the key, the value and what is allowed."""


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt or belongs to another model; the message says which."""


class AudioError(InputError):
    """An audio file cannot be used (unreadable, empty, non-finite, of an unsupported layout)."""


class DivergedError(SepkitError, FloatingPointError):
    """Training produced a non-finite loss (lower the learning rate, check the data)."""


class BackendError(SepkitError, RuntimeError):
    """A kernel backend cannot run here (Triton without CUDA, an unknown ``SEPKIT_BACKEND``)."""


class DependencyError(SepkitError, RuntimeError):
    """A program or package this needs is not installed (e.g. the espeak-ng synthesizer); the
    message says how to install it."""


__all__ = ["SepkitError", "InputError", "InputTypeError", "ConfigError", "CheckpointError", "AudioError",
           "DivergedError", "BackendError", "DependencyError"]
