"""The one base class of user-facing errors.

Anything raised as a :class:`UserError` (or a subclass) is bad input or an unusable file, not a
bug: the ``icl-kernel`` dispatcher prints its message as one line and exits with code 2. Messages
name the bad value and what was expected. Library layers (``theory``, ``simulate``, ``llm_check``)
subclass it for their own typed errors. It subclasses ``ValueError`` so that library callers who
catch ``ValueError`` keep working.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad user input or an unusable file: reported as one line, exit code 2."""


class UsageError(UserError):
    """A command-line value that does not parse or is out of range."""


def one_line(text: object) -> str:
    """Fold a message onto one line (messages may quote file contents or paths with newlines)."""
    return " ".join(str(text).split())
