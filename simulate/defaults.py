"""Light constants shared by the sweep and its CLI (no JAX import: the CLI imports this eagerly)."""
from __future__ import annotations

import numpy as np

#: The default numbers of demonstrations n of a sweep.
DEFAULT_GRID = (1, 2, 4, 8, 16, 32, 64, 128)
#: The default kernels of a sweep (matched prompt law).
DEFAULT_KERNELS = ("predictive", "belief", "predictive:beta=20", "belief:beta=20", "gram", "pretrain", "task")
#: The default kernels for GINC's prompt laws: GINC's 5 × 100 states make vec(T_x) too large for Σ.
GINC_KERNELS = ("predictive", "belief", "predictive:beta=20", "belief:beta=20")
#: How a sweep draws its prompts: ``matched`` (p_pre's own format, simulate.sampling), ``ginc-id`` /
#: ``ginc-ood`` (GINC's ID_sample / OOD_sample, simulate.ginc).
PROMPT_LAWS = ("matched", "ginc-id", "ginc-ood")


def is_int(v) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
