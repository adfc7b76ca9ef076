"""User-facing errors of the ICL data, prompt and analysis layers.

All are ``ValueError`` subclasses defined in ``llm_check`` so that the ``icl-kernel`` dispatcher
turns them into one-line messages with exit status 2. Each message names the bad value (file and
line where there is one) and what was expected.
"""
from __future__ import annotations

from icl_kernel.errors import UserError


class DataError(UserError):
    """A data file is missing, malformed or undecodable, or a split is unusable."""


class UnknownTaskError(DataError):
    """The task name is not one of the built-in tasks (and not ``custom``)."""


class EmptySplitError(DataError):
    """A split (demonstration pool or evaluation set) has no rows."""


class DecodeError(DataError):
    """A text file could not be decoded with the expected encoding."""


class LabelWordError(UserError):
    """A label word is unusable: not a single token, or two labels share a first token."""


class PromptError(UserError):
    """A prompt cannot be built: too long for the model, or n larger than the pool."""
