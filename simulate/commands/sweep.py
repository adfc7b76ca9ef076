"""`icl-kernel sweep`: exact Bayesian ICL vs kernel regression as the number of demonstrations grows."""
from __future__ import annotations

import argparse


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"{text!r} is empty; expected e.g. 1,2,4,8")
    return vals


def _seeds(text: str) -> list[int]:
    if ":" in text:
        a, _, b = text.partition(":")
        try:
            return list(range(int(a), int(b)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a seed range like 0:5") from None
    return _int_list(text)


def _params(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        k, eq, v = item.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"preset parameter {item!r} is not KEY=VALUE")
        try:
            out[k] = float(v) if any(c in v for c in ".eE") else int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"preset parameter {item!r}: {v!r} is not a number") from None
    return out


def kernel_list(text: str) -> list[str]:
    """Kernel labels separated by spaces (or by ';' when a label itself needs spaces)."""
    return [k for k in text.split(";") if k] if ";" in text else text.split()


PRESET_HELP = "han: the paper's synthetic HMM (8 tasks, 80 states, 100 tokens); ginc: Xie et al.'s GINC; custom: --hmm-file"
PARAM_HELP = ("override a preset parameter, e.g. -P num_tasks=4 -P emit_conc=0.3 (han: num_tasks, num_states, "
              "num_tokens, trans_conc, emit_conc, delim_rate, leak, seed; ginc: vocab, n_values, n_slots, n_concepts, "
              "transition_temp, start_temp, value_identity_coeff, start_slot, seed)")


def add_preset_arguments(p: argparse.ArgumentParser, title: str = "pretraining distribution",
                         preset_help: str = PRESET_HELP, param_help: str = PARAM_HELP):
    """--preset, --param/-P and --hmm-file (shared by sweep, bound and phenomena); returns the group."""
    g = p.add_argument_group(title)
    g.add_argument("--preset", choices=["han", "ginc", "custom"], default="han", help=preset_help)
    g.add_argument("--param", "-P", action="append", metavar="KEY=VALUE", default=[], help=param_help)
    g.add_argument("--hmm-file", help="custom HMM (.npz or .json with T, B, delim, optional task_of_state, "
                                      "task_start|starts, R, p0, delim_weight)")
    return g


def add_arguments(p: argparse.ArgumentParser) -> None:
    from simulate.sweep import DEFAULT_GRID, DEFAULT_KERNELS

    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.description = (
        "Sample ICL prompts x_1 y_1 δ … x_n y_n δ x_test from a task of an HMM pretraining distribution, "
        "compute the exact Bayesian predictive P(y | prompt; p_pre) for every n of the grid in one forward "
        "pass, the Oracle P(y | x_test; θ*), and the kernel-regression estimate ŷ_n for each kernel; write "
        "runs/NAME/ (resumable) and print the table.")
    add_preset_arguments(p)
    g = p.add_argument_group("prompts")
    g.add_argument("--n", dest="grid", type=_int_list, default=list(DEFAULT_GRID), metavar="N1,N2,...",
                   help="numbers of demonstrations")
    g.add_argument("--seeds", type=_seeds, default=[0, 1, 2, 3, 4], help="prompt seeds: list or range a:b")
    g.add_argument("--prompts", type=int, default=200, help="prompts per seed")
    g.add_argument("--length", "-l", type=int, default=5, help="input length l of each x_i and x_test")
    g.add_argument("--labels", type=_int_list, default=None, metavar="Y1,Y2,...",
                   help="label token ids (default: the first --num-labels non-delimiter tokens)")
    g.add_argument("--num-labels", type=int, default=4, help="size of the automatic label set")
    g.add_argument("--label-mode", choices=["sample", "argmax"], default="sample",
                   help="demonstration labels sampled from P(y|x,θ*) or argmax (GINC)")
    g.add_argument("--task", type=int, default=None, help="fix the test task θ* (default: uniform per prompt)")
    g = p.add_argument_group("estimators")
    g.add_argument("--kernels", type=kernel_list, default=list(DEFAULT_KERNELS), metavar="'K1 K2 ...'",
                   help="kernels, space-separated: gram, pretrain, task, belief, predictive; options after a colon, "
                        "e.g. 'belief:beta=20 gram:rtol=1e-8 pretrain:ridge=1e-6,mc_samples=50000'")
    g.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="forward-pass precision")
    g.add_argument("--save-predictions", type=int, default=0, metavar="K",
                   help="also save the Bayes, Oracle and kernel vectors of the first K prompts")
    g = p.add_argument_group("run")
    g.add_argument("--name", default="default", help="run folder runs/NAME")
    g.add_argument("--runs-dir", default="runs", help="parent folder of run folders")
    g.add_argument("--overwrite", action="store_true", help="discard a run folder made with another config")
    g.add_argument("--chunk", type=int, default=256, help="prompts per device batch")
    g.add_argument("--devices", type=int, default=None, help="CPU devices to split into (default: cores, max 8)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def run(args) -> int:
    from pathlib import Path

    from simulate.runtime import setup

    setup(args.devices)
    from simulate.sweep import SweepConfig, run_sweep, format_table

    cfg = SweepConfig(preset=args.preset, preset_params=_params(args.param), hmm_file=args.hmm_file,
                      grid=tuple(args.grid), seeds=tuple(args.seeds), prompts_per_seed=args.prompts,
                      length=args.length, labels=tuple(args.labels) if args.labels else "auto",
                      num_labels=args.num_labels, label_mode=args.label_mode, task=args.task,
                      kernels=tuple(args.kernels), dtype=args.dtype, save_predictions=args.save_predictions)
    out = Path(args.runs_dir) / args.name
    summary = run_sweep(cfg, out, overwrite=args.overwrite, quiet=args.quiet, chunk=args.chunk)
    print(format_table(summary))
    print(f"run folder: {out}  ({summary['wall_seconds_this_call']:.1f} s)")
    return 0
