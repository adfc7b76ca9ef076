"""`icl-kernel bound`: the constants of Theorem 1 and its bound curve, for a preset or a run folder."""
from __future__ import annotations

import argparse

from icl_kernel.errors import UserError
from simulate.commands.sweep import _int_list, _params, add_preset_arguments, kernel_list


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
    g.add_argument("--length", "-l", type=int, default=5, help="input length l")
    g.add_argument("--num-labels", type=int, default=4, help="size of the automatic label set")
    g.add_argument("--labels", type=_int_list, default=None, metavar="Y1,Y2,...", help="label token ids")
    g.add_argument("--kernels", type=kernel_list, default=["predictive", "belief", "predictive:beta=20", "belief:beta=20", "gram"],
                   help="kernels, space-separated (with a run folder: the run's kernels)")
    g = p.add_argument_group("bound")
    g.add_argument("--n", dest="grid", type=_int_list, default=list(DEFAULT_BOUND_GRID), metavar="N1,N2,...",
                   help="demonstration counts (a run folder's grid is added)")
    g.add_argument("--delta-k", type=float, default=0.05, help="failure probability of the kernel deviation term")
    g.add_argument("--delta-b", type=float, default=0.05, help="failure probability of the Bayes->Oracle term")
    g.add_argument("--prompts", type=int, default=64, help="prompts to evaluate the bound on")
    g.add_argument("--mc-demos", type=int, default=4096,
                   help="Monte Carlo demonstrations per task when the inputs cannot be enumerated")
    g.add_argument("--seed", type=int, default=0, help="seed of the prompts and Monte Carlo draws")
    g.add_argument("--out", default=None, help="write the JSON here (default: RUN/bound.json, or print only)")
    g.add_argument("--devices", type=int, default=None, help="CPU devices (default: cores, max 8)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


class BoundArgumentError(UserError):
    """A bad argument of `icl-kernel bound`."""


def run(args) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from simulate.runtime import setup

    setup(args.devices)
    from simulate import bounds_run as br
    from simulate.sampling import sample_prompts
    from simulate.presets import load_custom
    from simulate.sweep import RunFolderError, SweepConfig, atomic_write_json, prompt_key, resolve
    from theory import kernels as tk

    if not 0 < args.delta_k < 1 or not 0 < args.delta_b < 1:
        raise BoundArgumentError(f"delta_k={args.delta_k}, delta_b={args.delta_b}; expected probabilities in (0, 1)")
    if args.prompts < 1:
        raise BoundArgumentError(f"--prompts {args.prompts}, expected >= 1")
    if args.mc_demos < 1:
        raise BoundArgumentError(f"--mc-demos {args.mc_demos}, expected >= 1")
    if any(n < 1 for n in args.grid):
        raise BoundArgumentError(f"--n {args.grid}: every n must be >= 1")
    run_dir = Path(args.run_dir) if args.run_dir else None
    grid = set(args.grid)
    if run_dir is not None:
        cfg_path = run_dir / "config.json"
        if not cfg_path.exists():
            raise RunFolderError(f"{cfg_path} not found; expected a sweep's run folder")
        rc = json.loads(cfg_path.read_text())  # already resolved by the sweep
        hmm = load_custom(run_dir / "hmm.npz")  # the run's own HMM, as the sweep saved it
        if rc["label_mode"] != "sample":
            raise BoundArgumentError("the bound assumes labels sampled from P(y|x,θ*) (label_mode 'sample'), "
                                     f"not {rc['label_mode']!r}")
        pfile = run_dir / "prompts" / f"seed_{rc['seeds'][0]}.npz"
        if not pfile.exists():
            raise RunFolderError(f"{pfile} not found; the sweep has not finished its first seed")
        with np.load(pfile) as z:
            x_test, tasks = z["x_test"][:args.prompts], z["task"][:args.prompts]
        grid |= set(rc["grid"])
        specs = [tk.parse_kernel(k) for k in rc["kernels"]]
        length, labels = rc["length"], rc["labels"]
    else:
        cfg = SweepConfig(preset=args.preset, preset_params=_params(args.param), hmm_file=args.hmm_file,
                          length=args.length, labels=tuple(args.labels) if args.labels else "auto",
                          num_labels=args.num_labels, kernels=tuple(args.kernels))
        resolved, hmm = resolve(cfg)
        specs = [tk.parse_kernel(k) for k in args.kernels]
        length, labels = resolved["length"], resolved["labels"]
        pr = sample_prompts(prompt_key(args.seed), hmm, labels, args.prompts, 1, length)
        x_test, tasks = pr.x_test, pr.task
    bound = br.compute_bound(hmm, length, labels, specs, x_test, tasks, sorted(grid), args.delta_k, args.delta_b,
                             args.mc_demos, args.seed, quiet=args.quiet)
    if run_dir is not None and (run_dir / "summary.json").exists():
        bound["run_check"] = br.compare_with_run(bound, run_dir)
    print(br.format_bound(bound))
    out = Path(args.out) if args.out else (run_dir / "bound.json" if run_dir is not None else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, bound)
        print(f"wrote {out}  ({bound['seconds']:.1f} s)")
    return 0
