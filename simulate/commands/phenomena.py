"""`icl-kernel phenomena {retrieval,labels,ood}`: the paper's §4.2 phenomena, run exactly in the simulator."""
from __future__ import annotations

import argparse

from simulate.commands.sweep import _int_list, _params, _seeds, add_preset_arguments, kernel_list

HELP = dict(
    retrieval="demonstrations retrieved by similarity to x_test (predictive kernel, token agreement) vs random ones",
    labels="demonstration labels mapped to other tokens (changed label format)",
    ood="demonstration inputs drawn away from p_pre (emissions mixed toward uniform); floor vs ε_θ",
)


def _add_common(p: argparse.ArgumentParser, kind: str) -> None:
    from simulate.phenomena import DEFAULT_PARAMS, DEFAULT_PROMPTS, DEFAULT_SEEDS, DEFAULTS

    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    add_preset_arguments(p, preset_help="han (defaults here: " + ", ".join(f"{k}={v}" for k, v in DEFAULT_PARAMS.items())
                         + "), ginc, or custom (--hmm-file)",
                         param_help="override a preset parameter, as in `icl-kernel sweep` (on top of the defaults above)")
    g = p.add_argument_group("prompts")
    g.add_argument("--grid", "--n", dest="grid", default=",".join(map(str, DEFAULTS[kind]["grid"])),
                   metavar="N1,N2,...", help="numbers of demonstrations")
    g.add_argument("--seeds", default=f"{DEFAULT_SEEDS[0]}:{DEFAULT_SEEDS[-1] + 1}", help="prompt seeds: list or range a:b")
    g.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS, help="prompts per seed")
    g.add_argument("--length", "-l", type=int, default=DEFAULTS[kind]["length"],
                   help="input length l of each x_i and x_test")
    g.add_argument("--num-labels", type=int, default=3, help="size of the automatic label set Y")
    g.add_argument("--labels", default=None, metavar="Y1,Y2,...", help="label token ids (default: the first --num-labels emittable non-delimiter tokens)")
    g.add_argument("--kernels", default=" ".join(DEFAULTS[kind]["kernels"]), metavar="'K1 K2 ...'",
                   help="kernels, space-separated, as in `icl-kernel sweep`")
    g = p.add_argument_group("run")
    g.add_argument("--name", default=f"phen-{kind}", help="run folder RUNS_DIR/NAME and figure FIGURES_DIR/NAME.png")
    g.add_argument("--runs-dir", default="runs", help="parent folder of run folders")
    g.add_argument("--figures-dir", default="figures", help="folder of the figure")
    g.add_argument("--force", action="store_true", help="discard a run folder made with another config")
    g.add_argument("--devices", type=int, default=None, help="CPU devices to split into (default: cores, max 8)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.description = ("Phenomena the paper argues in words (§4.2), run exactly: each writes RUNS_DIR/NAME "
                     "(config.json, metrics.csv, summary.json, per_prompt.npz), figures/NAME.png and prints a table. "
                     "See docs/phenomena.md.")
    sub = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, help_ in HELP.items():
        q = sub.add_parser(kind, help=help_, description=help_)
        _add_common(q, kind)
        if kind == "retrieval":
            q.add_argument("--pool", type=int, default=None, help="candidate demonstrations per prompt (default 8 · max n)")
        elif kind == "labels":
            q.add_argument("--mapping", default="other", help="other: the next |Y| emittable non-delimiter tokens "
                                                                "outside Y; permute: the cyclic shift of Y; identity")
        else:
            q.add_argument("--lambdas", default="0,0.25,0.5,0.75,1", metavar="L1,L2,...",
                           help="emission mixing weights λ in [0, 1] (B_λ = (1-λ)B + λ·uniform)")


def _parse(kind_of_value: str, fn, text):
    from simulate.phenomena import PhenomenaError

    try:
        return fn(text)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise PhenomenaError(f"{kind_of_value}: {exc}") from None


def _floats(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of numbers") from None
    if not vals:
        raise ValueError(f"{text!r} is empty; expected e.g. 0,0.5,1")
    return vals


def config_from_args(args):
    """A PhenomenonConfig from parsed arguments (bad values raise PhenomenaError, one line)."""
    from simulate.phenomena import DEFAULT_PARAMS, PhenomenonConfig, default_config

    params = dict(DEFAULT_PARAMS) if args.preset == "han" else {}
    params.update(_parse("--param", _params, args.param))
    labels = tuple(_parse("--labels", _int_list, args.labels)) if args.labels else "auto"
    cfg = default_config(args.kind, preset=args.preset, preset_params=params, hmm_file=args.hmm_file,
                         grid=tuple(_parse("--grid", _int_list, args.grid)),
                         seeds=tuple(_parse("--seeds", _seeds, args.seeds)), prompts_per_seed=args.prompts,
                         length=args.length, labels=labels, num_labels=args.num_labels,
                         kernels=tuple(kernel_list(args.kernels)))
    extra = {}
    if args.kind == "retrieval":
        extra["pool"] = args.pool
    elif args.kind == "labels":
        extra["mapping"] = args.mapping
    else:
        extra["lambdas"] = tuple(_parse("--lambdas", _floats, args.lambdas))
    return PhenomenonConfig(args.kind, cfg.common, **extra)


def run(args) -> int:
    from pathlib import Path

    from simulate.runtime import setup

    setup(args.devices)
    from simulate.phenomena import format_table, run_phenomenon

    cfg = config_from_args(args)
    out = Path(args.runs_dir) / args.name
    summary = run_phenomenon(cfg, out, force=args.force, quiet=args.quiet,
                             figure=Path(args.figures_dir) / f"{args.name}.png")
    print(format_table(summary))
    print(f"run folder: {out}  figure: {summary['figure']}  ({summary['wall_seconds']:.1f} s)")
    return 0
