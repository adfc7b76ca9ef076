r"""Phenomena the paper argues in words (§4.2), run exactly in the simulator: one module each.

* :mod:`~simulate.phenomena.retrieval`: demonstrations retrieved by similarity to x_test vs random.
* :mod:`~simulate.phenomena.labels`: demonstration labels sent through a bijection π: Y → Y'.
* :mod:`~simulate.phenomena.ood`: demonstration inputs drawn from emissions mixed toward uniform.

Each is a :class:`~simulate.phenomena.common.Phenomenon` (the contract: resolve its options, run
one seed, summarise, table, plot); :mod:`~simulate.phenomena.common` holds the code they share
(the run folder, the layout of its files, the summary and the figure). This module is the
registry and the public API: :data:`PHENOMENA`, :func:`default_config`, :func:`run_phenomenon`,
:func:`format_table`, :func:`plot_phenomenon`.
"""
from __future__ import annotations

from simulate.phenomena import common, labels, ood, retrieval
from simulate.phenomena.common import (DEFAULT_CHUNK, DEFAULT_PARAMS, DEFAULT_PROMPTS, DEFAULT_SEEDS, Phenomenon,
                                       PhenomenaError, PhenomenonConfig)

PHENOMENA: dict[str, Phenomenon] = {m.PHENOMENON.kind: m.PHENOMENON for m in (retrieval, labels, ood)}
KINDS = tuple(PHENOMENA)

__all__ = ["KINDS", "PHENOMENA", "DEFAULT_PARAMS", "DEFAULT_PROMPTS", "DEFAULT_SEEDS", "PhenomenaError",
           "PhenomenonConfig", "Phenomenon", "get", "default_config", "resolve_phenomenon", "run_phenomenon",
           "format_table", "plot_phenomenon"]


def get(kind: str) -> Phenomenon:
    """The registered phenomenon ``kind``."""
    try:
        return PHENOMENA[kind]
    except KeyError:
        raise PhenomenaError(f"unknown phenomenon {kind!r}; expected one of {', '.join(KINDS)}") from None


def default_config(kind: str, options: dict | None = None, **common_fields) -> PhenomenonConfig:
    """The kind's defaults (small HMM, |Y| = 3, float64, its grid, length and kernels);
    ``common_fields`` override :class:`simulate.sweep.SweepConfig` fields, ``options`` the kind's options."""
    ph = get(kind)
    base = dict(preset_params=dict(DEFAULT_PARAMS), grid=ph.grid, seeds=DEFAULT_SEEDS,
                prompts_per_seed=DEFAULT_PROMPTS, length=ph.length, num_labels=3, kernels=ph.kernels,
                dtype="float64")
    base.update(common_fields)
    return PhenomenonConfig(kind, common.SweepConfig(**base), dict(options or {}))


def resolve_phenomenon(cfg: PhenomenonConfig):
    """Validate everything (nothing is written) and return ``(resolved config, HMM)``."""
    return common.resolve_phenomenon(get(cfg.kind), cfg)


def run_phenomenon(cfg: PhenomenonConfig, out_dir, *, overwrite: bool = False, quiet: bool = False,
                   figure=None, chunk: int = DEFAULT_CHUNK, log=print) -> dict:
    """Run (or resume) ``cfg`` into the run folder ``out_dir``; write the figure (if given); return the summary."""
    return common.run_phenomenon(get(cfg.kind), cfg, out_dir, overwrite=overwrite, quiet=quiet, figure=figure,
                                 chunk=chunk, log=log)


def format_table(summary: dict) -> str:
    """The kind's plain-text table (means with 95% bootstrap bands)."""
    return get(summary["config"]["kind"]).table(summary)


def plot_phenomenon(summary: dict, out_path):
    """The kind's figure (PNG, written atomically)."""
    return common.plot_phenomenon(get(summary["config"]["kind"]), summary, out_path)
