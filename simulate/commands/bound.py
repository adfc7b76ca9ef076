"""`icl-kernel bound`: the constants of Theorem 1 and its bound curve, for a preset or a run folder."""
from __future__ import annotations

import argparse

from icl_kernel import argtypes as at
from simulate.commands.sweep import add_preset_arguments, kernel_list, params


def add_arguments(p: argparse.ArgumentParser) -> None:
    from simulate.bounds_run import DEFAULT_BOUND_GRID

    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.description = (
        "Check the theorem's assumptions (restart at the delimiter, delimiter and start lower bounds, task "
        "distinguishability) and print its constants (eta, eps_theta, ||G^+||, D) and, per kernel, the bound on "
        "||y_hat_n - Bayes_n||_1 = deviation + bias + Bayes->Oracle as a function of n (medians over prompts). "
        "With a run folder the bound uses the run's prompts, is checked against the errors the sweep measured, "
        "and is saved as RUN/bound.json for `icl-kernel plot --bound`. See docs/theory.md.")
    p.add_argument("run_dir", nargs="?", default=None, help="a sweep's run folder (default: build from --preset)")
    g = add_preset_arguments(p, "without a run folder")
    g.add_argument("--length", "-l", type=at.positive_int, default=5, help="input length l")
    g.add_argument("--num-labels", type=at.positive_int, default=4, help="size of the automatic label set")
    g.add_argument("--labels", type=at.int_list, default=None, metavar="Y1,Y2,...", help="label token ids")
    g.add_argument("--kernels", type=kernel_list, default=["predictive", "belief", "predictive:beta=20", "belief:beta=20", "gram"],
                   help="kernels, space-separated (with a run folder: the run's kernels)")
    g = p.add_argument_group("bound")
    g.add_argument("--n", dest="grid", type=at.positive_int_list, default=list(DEFAULT_BOUND_GRID), metavar="N1,N2,...",
                   help="demonstration counts (a run folder's grid is added)")
    g.add_argument("--delta-k", type=at.open_probability, default=0.05, help="failure probability of the kernel deviation term")
    g.add_argument("--delta-b", type=at.open_probability, default=0.05, help="failure probability of the Bayes->Oracle term")
    g.add_argument("--prompts", type=at.positive_int, default=64, help="prompts to evaluate the bound on")
    g.add_argument("--mc-demos", type=at.positive_int, default=4096,
                   help="Monte Carlo demonstrations per task when the inputs cannot be enumerated")
    g.add_argument("--seed", type=at.nonnegative_int, default=0, help="seed of the prompts and Monte Carlo draws")
    g.add_argument("--out", default=None, help="write the JSON here (default: RUN/bound.json, or print only)")
    g.add_argument("--devices", type=at.devices, default=None, help="CPU devices (default: cores, max 8)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def run(args) -> int:
    from simulate.runtime import setup

    setup(args.devices)
    from simulate.bounds_run import BoundConfig, format_bound, run_bound
    from simulate.sweep import SweepConfig

    sweep = SweepConfig(preset=args.preset, preset_params=params(args.param), hmm_file=args.hmm_file,
                        length=args.length, labels=tuple(args.labels) if args.labels else "auto",
                        num_labels=args.num_labels, kernels=tuple(args.kernels))
    cfg = BoundConfig(sweep, tuple(args.grid), args.delta_k, args.delta_b, args.prompts, args.mc_demos, args.seed)
    bound = run_bound(cfg, args.run_dir, args.out, quiet=args.quiet)
    print(format_bound(bound))
    if "written_to" in bound:
        print(f"wrote {bound['written_to']}  ({bound['seconds']:.1f} s)")
    return 0
