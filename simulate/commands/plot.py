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

    from simulate.plotting import plot_convergence

    run_dir = Path(args.run_dir)
    bound = None
    if args.bound:
        import json

        from simulate.sweep import RunFolderError

        bpath = run_dir / "bound.json"
        if not bpath.exists():
            raise RunFolderError(f"{bpath} not found; run `icl-kernel bound {run_dir}` first")
        bound = json.loads(bpath.read_text())
    default = f"{run_dir.name}-{'bound' if args.bound else 'convergence'}.png"
    out = Path(args.out) if args.out else Path("figures") / default
    path = plot_convergence(run_dir, out, args.kernels.split() if args.kernels else None,
                            show_paper=not args.no_paper, bound=bound)
    print(f"wrote {path}")
    return 0
