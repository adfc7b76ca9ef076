"""Typed errors of the mathematics layer. Messages are one line: the bad value and what was expected."""

from icl_kernel.errors import UserError


class HMMError(UserError):
    """An HMM that is not a valid (token-dependent) hidden Markov model."""


class KernelError(UserError):
    """A kernel that cannot be built as asked (bad spec, singular Σ without a tolerance, too large)."""


class AssumptionError(UserError):
    """An HMM that violates an assumption of the theorem, so a bound would be wrong."""
