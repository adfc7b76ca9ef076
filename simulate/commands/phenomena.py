"""`icl-kernel phenomena {retrieval,labels,ood}`: the paper's §4.2 phenomena, run exactly in the simulator.

Only parsing (bad values fail in argparse, one line, exit 2), the config, the call and the report;
the pipeline is :func:`simulate.phenomena.run_phenomenon`.
"""
from __future__ import annotations

import argparse

from icl_kernel import argtypes as at
from simulate.commands.sweep import add_preset_arguments, add_run_arguments, kernel_list, params


def lambda_list(text: str) -> list[float]:
    """Comma-separated mixing weights λ in [0, 1]."""
    vals = at.number_list(text)
    bad = [v for v in vals if not 0.0 <= v <= 1.0]
    if bad:
        raise argparse.ArgumentTypeError(f"{text!r} contains {bad}; expected numbers in [0, 1]")
    return vals


def _add_common(p: argparse.ArgumentParser, ph) -> None:
    from simulate.phenomena import DEFAULT_PARAMS, DEFAULT_PROMPTS, DEFAULT_SEEDS

    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    add_preset_arguments(p, preset_help="han (defaults here: " + ", ".join(f"{k}={v}" for k, v in DEFAULT_PARAMS.items())
                         + "), ginc, or custom (--hmm-file)",
                         param_help="override a preset parameter, as in `icl-kernel sweep` (on top of the defaults above)")
    g = p.add_argument_group("prompts")
    g.add_argument("--grid", "--n", dest="grid", type=at.positive_int_list, default=list(ph.grid),
                   metavar="N1,N2,...", help="numbers of demonstrations")
    g.add_argument("--seeds", type=at.seed_list, default=list(DEFAULT_SEEDS), help="prompt seeds: list or range a:b")
    g.add_argument("--prompts", type=at.positive_int, default=DEFAULT_PROMPTS, help="prompts per seed")
    g.add_argument("--length", "-l", type=at.positive_int, default=ph.length, help="input length l of each x_i and x_test")
    g.add_argument("--num-labels", type=at.positive_int, default=3, help="size of the automatic label set Y")
    g.add_argument("--labels", type=at.int_list, default=None, metavar="Y1,Y2,...",
                   help="label token ids (default: the first --num-labels emittable non-delimiter tokens)")
    g.add_argument("--kernels", type=kernel_list, default=list(ph.kernels), metavar="'K1 K2 ...'",
                   help="kernels, space-separated, as in `icl-kernel sweep`")
    g = p.add_argument_group("run")
    add_run_arguments(g, f"phen-{ph.kind}")
    g.add_argument("--force", dest="overwrite", action="store_true", help=argparse.SUPPRESS)  # the old name
    g.add_argument("--figures-dir", default="figures", help="folder of the figure FIGURES_DIR/NAME.png")
    g.add_argument("--chunk", type=at.positive_int, default=256, help="prompts per device batch")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from simulate.phenomena import PHENOMENA
    from simulate.phenomena.labels import MAPPINGS

    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.description = ("Phenomena the paper argues in words (§4.2), run exactly: each writes RUNS_DIR/NAME "
                     "(config.json, cells/, metrics.csv, summary.json, per_prompt.npz; resumable), "
                     "FIGURES_DIR/NAME.png and prints a table. See docs/phenomena.md.")
    sub = p.add_subparsers(dest="kind", metavar="KIND", required=True, parser_class=type(p))
    for kind, ph in PHENOMENA.items():
        q = sub.add_parser(kind, help=ph.help, description=ph.help)
        _add_common(q, ph)
        if kind == "retrieval":
            q.add_argument("--pool", type=at.positive_int, default=ph.options["pool"],
                           help="candidate demonstrations per prompt (default 8 · max n)")
        elif kind == "labels":
            q.add_argument("--mapping", choices=MAPPINGS, default=ph.options["mapping"],
                           help="other: the next |Y| emittable non-delimiter tokens outside Y; permute: the cyclic "
                                "shift of Y; identity")
        else:
            q.add_argument("--lambdas", type=lambda_list, default=list(ph.options["lambdas"]), metavar="L1,L2,...",
                           help="emission mixing weights λ in [0, 1] (B_λ = (1-λ)B + λ·uniform)")


def config_from_args(args):
    """A PhenomenonConfig from parsed (already type-checked) arguments."""
    from simulate.phenomena import DEFAULT_PARAMS, default_config

    preset_params = dict(DEFAULT_PARAMS) if args.preset == "han" else {}
    preset_params.update(params(args.param))
    options = dict(retrieval=lambda: dict(pool=args.pool), labels=lambda: dict(mapping=args.mapping),
                   ood=lambda: dict(lambdas=tuple(args.lambdas)))[args.kind]()
    return default_config(args.kind, options, preset=args.preset, preset_params=preset_params,
                          hmm_file=args.hmm_file, grid=tuple(args.grid), seeds=tuple(args.seeds),
                          prompts_per_seed=args.prompts, length=args.length,
                          labels=tuple(args.labels) if args.labels else "auto", num_labels=args.num_labels,
                          kernels=tuple(args.kernels))


def run(args) -> int:
    from pathlib import Path

    from simulate.runtime import setup

    setup(args.devices)
    from simulate.phenomena import format_table, run_phenomenon

    cfg = config_from_args(args)
    out = Path(args.runs_dir) / args.name
    summary = run_phenomenon(cfg, out, overwrite=args.overwrite, quiet=args.quiet, chunk=args.chunk,
                             figure=Path(args.figures_dir) / f"{args.name}.png")
    print(format_table(summary))
    print(f"run folder: {out}  figure: {summary['figure']}  ({summary['wall_seconds']:.1f} s)")
    return 0
