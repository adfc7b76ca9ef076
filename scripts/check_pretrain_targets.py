"""Issue 11's numbers for a pretrain run and its transformer-check run, each with pass/fail.

    .venv/bin/python scripts/check_pretrain_targets.py runs/pt-han4-tiny runs/tc-han4-tiny

Targets: held-out excess loss <= 0.02 nats/token; the transformer's L1 to the Oracle at n = 16 at
most half its value at n = 1; accuracy vs the Oracle rising with n; L1 to Bayes <= 0.05 at every
n >= 4; and the setting needs the demonstrations (posterior mass on θ* at n = 0 below 0.7).

Exit status: 0 when every target passes, 1 when any target fails, 2 on bad input (a folder that is
not a finished pretrain / transformer-check run, a summary lacking a field, a grid without n = 1
and n = 16); bad input is reported in one line on stderr.
"""
from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

import numpy as np

from icl_kernel.errors import UserError
from icl_kernel.runfolder import open_existing

PROG = "check_pretrain_targets"


class Target(NamedTuple):
    """One target line: its description, the measured value (a float or a text), and whether it passes."""
    name: str
    value: float | str
    ok: bool


def _field(summary: dict, path: str, run_dir) -> object:
    """``summary[a][b]...`` for ``path`` = "a.b..."; UserError naming the run and field when absent."""
    value = summary
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise UserError(f"{run_dir}/summary.json lacks {path!r}; expected a finished run's summary")
        value = value[key]
    return value


def evaluate_targets(pt: dict, tc: dict, mass0: float, pretrain_dir="pretrain run", check_dir="check run") -> list[Target]:
    """The five target lines from a pretrain summary, a transformer-check summary and the posterior
    mass on θ* at n = 0 (mean over the check's prompts). A NaN value fails its target."""
    grid = np.asarray(_field(tc, "config.grid", check_dir), float)
    l1o, acc, l1b = (np.asarray([np.nan if v is None else v for v in _field(tc, f"curves.transformer.{k}", check_dir)],
                                float) for k in ("l1_oracle", "acc_oracle", "l1_bayes"))  # JSON null = NaN
    if not (1 in grid and 16 in grid) or not (len(l1o) == len(acc) == len(l1b) == len(grid)):
        raise UserError(f"{check_dir}: grid {grid.astype(int).tolist()} with curves of lengths "
                        f"{len(l1o)}/{len(acc)}/{len(l1b)}; expected a grid holding n = 1 and n = 16, one value per n")
    excess = float(_field(pt, "final_excess_loss", pretrain_dir))
    i1, i16 = int(np.flatnonzero(grid == 1)[0]), int(np.flatnonzero(grid == 16)[0])
    late = l1b[grid >= 4]
    worst = float(late.max()) if late.size else float("nan")
    return [
        Target("posterior mass on θ* at n = 0 < 0.7", mass0, bool(mass0 < 0.7)),
        Target("held-out excess loss <= 0.02 nats/token", excess, bool(excess <= 0.02)),
        Target("L1 to Oracle: n=16 / n=1 <= 0.5", float(l1o[i16] / l1o[i1]), bool(l1o[i16] <= 0.5 * l1o[i1])),
        Target("accuracy vs Oracle rises with n (n=1 -> 16)", f"{acc[i1]:.3f} -> {acc[i16]:.3f}",
               bool(np.all(np.diff(acc) >= -0.01)) and bool(acc[i16] > acc[i1])),
        Target("max L1 to Bayes over n >= 4 <= 0.05", worst, bool(worst <= 0.05)),
    ]


def mass_on_task_at_zero(sweep_dir, seeds, labels) -> float:
    """Mean exact-Bayes posterior mass on the prompt's task at n = 0 over the sweep's saved prompts
    of ``seeds`` (float64)."""
    import jax
    import jax.numpy as jnp

    from simulate.forward import hmm_arrays, sweep_bayes
    from simulate.sweep import load_prompts, load_run_hmm

    sw = open_existing(sweep_dir, "sweep")
    hmm = load_run_hmm(sw)
    masses = []
    with jax.enable_x64(True):
        for s in seeds:
            pr = load_prompts(sw, s)
            sb = sweep_bayes(hmm_arrays(hmm, jnp.float64), jnp.asarray(pr.demos_x), jnp.asarray(pr.demos_y),
                             jnp.asarray(pr.x_test), jnp.asarray(pr.task), jnp.asarray(labels), (0,))
            masses.append(np.asarray(sb.task_mass)[0])
    return float(np.concatenate(masses).mean())


def check(pretrain_dir: str, check_dir: str) -> list[Target]:
    """Read both runs (and the check's sweep), print the target lines, return them."""
    pt = open_existing(pretrain_dir, "pretrain").read_json("summary.json")
    tc = open_existing(check_dir, "transformer-check").read_json("summary.json")
    mass0 = mass_on_task_at_zero(_field(tc, "config.sweep_run", check_dir), _field(tc, "config.seeds", check_dir),
                                 _field(tc, "config.labels", check_dir))
    rows = evaluate_targets(pt, tc, mass0, pretrain_dir, check_dir)
    print(f"model: {pretrain_dir} ({_field(pt, 'parameters', pretrain_dir):,} parameters, "
          f"{_field(pt, 'tokens', pretrain_dir):,} tokens); "
          f"prompts: {_field(tc, 'num_prompts', check_dir)} from {tc['config']['sweep_run']}")
    for row in rows:
        v = f"{row.value:.4f}" if isinstance(row.value, float) else row.value
        print(f"  {'PASS' if row.ok else 'FAIL'}  {row.name}: {v}")
    grid = tc["config"]["grid"]
    l1b = np.asarray([np.nan if v is None else v for v in tc["curves"]["transformer"]["l1_bayes"]], float)
    print("  L1 to Bayes by n: " + ", ".join(f"n={n}: {v:.3f}" for n, v in zip(grid, l1b)))
    return rows


def main(argv: list[str] | None = None) -> int:
    """0: every target passes; 1: some target fails; 2: bad input (one line on stderr)."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pretrain_run", help="a finished `icl-kernel pretrain` run folder (runs/pt-...)")
    p.add_argument("check_run", help="its `icl-kernel transformer-check` run folder (runs/tc-...)")
    args = p.parse_args(argv)  # a usage error exits 2
    try:
        rows = check(args.pretrain_run, args.check_run)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    failed = [r.name for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)} of {len(rows)} targets pass" + (f"; FAIL: {'; '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
