"""Typed, one-line errors for the LLM half of the project.

Every class subclasses ``ValueError`` so that the ``icl-kernel`` dispatcher reports it as a
one-line error with exit code 2. Messages name the bad value and what was expected.
"""
from __future__ import annotations

from icl_kernel.errors import UserError


class LLMCheckError(UserError):
    """Base class for user-facing errors raised by ``llm_check``."""


class ModelLoadError(LLMCheckError):
    """A model name, folder or file could not be loaded (missing/mismatched config, bad file)."""


class ConfigError(ModelLoadError):
    """A config is missing fields or is inconsistent with itself or with the weights."""


class UnsupportedModelError(ModelLoadError):
    """An architecture, checkpoint format or quantisation type this project does not handle."""


class CheckpointError(ModelLoadError):
    """Tensor names or shapes in a checkpoint do not match the model's weight-name table."""


class TokenizerError(ModelLoadError):
    """A tokenizer could not be built from the given file or metadata."""


class InputError(LLMCheckError):
    """Bad forward-pass input (shapes, dtypes, masks)."""


class PromptTooLongError(InputError):
    """A prompt is longer than the model's context length."""


class CapturePositionError(InputError):
    """A capture position lies outside the (unpadded) sequence."""
