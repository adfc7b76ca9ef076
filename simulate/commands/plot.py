"""`icl-kernel plot runs/NAME`: distance and agreement vs n for a sweep's run folder."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("run_dir", help="a sweep's run folder (runs/NAME)")
    p.add_argument("--out", default=None, help="output PNG (default: figures/NAME-convergence.png)")
    p.add_argument("--kernels", default=None, help="only these kernels (space-separated labels as in summary.json)")
    p.add_argument("--no-paper", action="store_true", help="do not overlay the paper's Table 3")
    p.add_argument("--bound", action="store_true",
                   help="overlay the Theorem-1 bound and exact bias from RUN/bound.json (run `icl-kernel bound RUN` first)")


def run(args) -> int:
    from pathlib import Path

    from icl_kernel.runfolder import RunFolderError, open_existing
    from simulate.plotting import plot_convergence

    run_dir = Path(args.run_dir)
    bound = None
    if args.bound:
        rf = open_existing(run_dir, "sweep")
        if not rf.exists("bound.json"):
            raise RunFolderError(f"{run_dir / 'bound.json'} not found; run `icl-kernel bound {run_dir}` first")
        bound = rf.read_json("bound.json")
    default = f"{run_dir.name}-{'bound' if args.bound else 'convergence'}.png"
    out = Path(args.out) if args.out else Path("figures") / default
    kernels = args.kernels.split() if args.kernels is not None else None
    path = plot_convergence(run_dir, out, kernels, show_paper=not args.no_paper, bound=bound)
    print(f"wrote {path}")
    return 0
