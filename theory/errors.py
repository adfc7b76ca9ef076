"""Typed errors of the mathematics layer. Messages are one line: the bad value and what was expected."""


class HMMError(ValueError):
    """An HMM that is not a valid (token-dependent) hidden Markov model."""


class KernelError(ValueError):
    """A kernel that cannot be built as asked (bad spec, singular Σ without a tolerance, too large)."""


class AssumptionError(ValueError):
    """An HMM that violates an assumption of the theorem, so a bound would be wrong."""
