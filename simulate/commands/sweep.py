"""`icl-kernel sweep`: exact Bayesian ICL vs kernel regression as the number of demonstrations grows."""
from __future__ import annotations

import argparse

from icl_kernel import argtypes as at
from icl_kernel.errors import UsageError
from simulate.defaults import DEFAULT_GRID, DEFAULT_KERNELS, GINC_KERNELS, PROMPT_LAWS

PRESETS = ("han", "ginc", "ginc-restart", "custom")
PRESET_HELP = ("han: the paper's synthetic HMM (8 tasks, 80 states, 100 tokens); ginc: GINC (Xie et al.) as its "
               "generator makes it (documents never restart: '/' is an ordinary emission); ginc-restart: GINC's "
               "concepts with a delimiter that restarts the chain (Assumption 1); custom: --hmm-file")
PARAM_HELP = ("override a preset parameter, e.g. -P num_tasks=4 -P emit_conc=0.3 (han: num_tasks, num_states, "
              "num_tokens, trans_conc, emit_conc, delim_rate, leak, seed; ginc: reference (1 = GINC's published "
              "parameters), vocab, n_values, n_slots, n_concepts, n_ood, transition_temp, start_temp, "
              "value_identity_coeff, seed; ginc-restart: vocab, n_values, n_slots, n_concepts, transition_temp, "
              "start_temp, value_identity_coeff, start_slot, seed)")


def grid_spec(text: str) -> tuple[list[int], bool]:
    """``--n``: a list ``1,2,4`` (those n), ``all`` (every n up to 128) or ``1:N`` (every n up to N).

    Returns (table grid, curve): with a curve, the table keeps the powers of two up to N, and N.
    """
    t = text.strip()
    if t == "all":
        return list(DEFAULT_GRID), True
    if ":" in t:
        a, _, b = t.partition(":")
        try:
            lo, hi = int(a), int(b)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a range like 1:1024") from None
        if lo != 1 or hi < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: a curve runs over every n from 1, expected 1:N with N >= 1")
        return sorted({2 ** k for k in range(hi.bit_length()) if 2 ** k <= hi} | {hi}), True
    return at.nonnegative_int_list(t), False


def params(items) -> dict:
    """``-P KEY=VALUE`` pairs as a dict; a key given twice is refused."""
    out = {}
    for k, v in items or []:
        if k in out:
            raise UsageError(f"preset parameter {k!r} is given twice ({out[k]} and {v}); give it once")
        out[k] = v
    return out


def kernel_list(text: str) -> list[str]:
    """Kernel labels separated by spaces (or by ';' when a label itself needs spaces); each checked."""
    from theory.errors import KernelError
    from theory.kernels import parse_kernel

    ks = [k for k in text.split(";") if k.strip()] if ";" in text else text.split()
    if not ks:
        raise argparse.ArgumentTypeError(f"{text!r} names no kernel; expected e.g. 'predictive belief:beta=20'")
    try:
        labels = [parse_kernel(k).label for k in ks]
    except KernelError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    dup = sorted({k for k in labels if labels.count(k) > 1})
    if dup:
        raise argparse.ArgumentTypeError(f"{text!r} repeats {dup}; expected each kernel once")
    return ks


def add_preset_arguments(p: argparse.ArgumentParser, title: str = "pretraining distribution",
                         preset_help: str = PRESET_HELP, param_help: str = PARAM_HELP):
    """--preset, --param/-P and --hmm-file (shared by sweep, bound and phenomena); returns the group."""
    g = p.add_argument_group(title)
    g.add_argument("--preset", choices=list(PRESETS), default="han", help=preset_help)
    g.add_argument("--param", "-P", action="append", metavar="KEY=VALUE", type=at.key_value, default=[],
                   help=param_help)
    g.add_argument("--hmm-file", help="custom HMM (.npz or .json with T, B, delim, optional task_of_state, "
                                      "task_start|starts, R, p0, delim_weight); needs --preset custom")
    return g


def add_run_arguments(g, default_name: str) -> None:
    """--name, --runs-dir, --overwrite, --devices, --quiet (shared by the simulator's writing commands)."""
    g.add_argument("--name", type=at.run_name, default=default_name, help="run folder RUNS_DIR/NAME (one path component)")
    g.add_argument("--runs-dir", default="runs", help="parent folder of run folders")
    g.add_argument("--overwrite", action="store_true",
                   help="discard a run folder of this project made with another config (never a foreign folder)")
    g.add_argument("--devices", type=at.devices, default=None, help="CPU devices to split into (default: cores, max 8)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.description = (
        "Sample ICL prompts x_1 y_1 δ … x_n y_n δ x_test from a task of an HMM pretraining distribution, "
        "compute the exact Bayesian predictive P(y | prompt; p_pre) for every n of the grid in one forward "
        "pass, the Oracle P(y | x_test; θ*), and the kernel-regression estimate ŷ_n for each kernel; write "
        "runs/NAME/ (resumable) and print the table.")
    add_preset_arguments(p)
    g = p.add_argument_group("prompts")
    g.add_argument("--n", dest="grid", type=grid_spec, default=None, metavar="N1,N2,...|all|1:N",
                   help="numbers of demonstrations: a list (n = 0: x_test alone, Bayes only); 'all' = every n up to "
                        "128; '1:N' = every n up to N (the table keeps the powers of two, the figure draws the whole "
                        "curve); default 1,2,4,...,128")
    g.add_argument("--prompt-law", choices=["auto", *PROMPT_LAWS], default="auto",
                   help="how prompts are drawn (they are always scored by exact Bayes under p_pre): matched = "
                        "p_pre's own format (each demonstration x y δ from its task's start, exactly); ginc-id / "
                        "ginc-ood = GINC's ID_sample / OOD_sample (needs --preset ginc); auto = ginc-id for "
                        "--preset ginc, else matched")
    g.add_argument("--ginc-params", default=None, metavar="reference|draw|PATH",
                   help="--preset ginc: GINC's published parameters ('reference': "
                        "../shared/data/ginc/ginc_reference.npz next to the repository, or $ICL_KERNEL_GINC_REFERENCE; "
                        "or a PATH to such a file) or new ones drawn with GINC's construction ('draw', with -P seed=S; "
                        "the default)")
    g.add_argument("--seeds", type=at.seed_list, default=[0, 1, 2, 3, 4], help="prompt seeds: list or range a:b")
    g.add_argument("--prompts", type=at.positive_int, default=200, help="prompts per seed")
    g.add_argument("--length", "-l", type=at.positive_int, default=None,
                   help="input length l of each x_i and x_test (GINC: k - 1, its example length k = l + 1); "
                        "default 5, or 2 (k = 3) for GINC's prompt laws")
    g.add_argument("--labels", type=at.int_list, default=None, metavar="Y1,Y2,...",
                   help="label token ids (default: the first --num-labels non-delimiter tokens)")
    g.add_argument("--num-labels", type=at.positive_int, default=4, help="size of the automatic label set")
    g.add_argument("--label-mode", choices=["sample", "argmax"], default="sample",
                   help="demonstration labels sampled from P(y|x,θ*) or argmax (GINC)")
    g.add_argument("--task", type=at.nonnegative_int, default=None,
                   help="fix the test task θ* (default: drawn from p0's task prior per prompt)")
    g = p.add_argument_group("estimators")
    g.add_argument("--kernels", type=kernel_list, default=None, metavar="'K1 K2 ...'",
                   help="kernels, space-separated: gram, pretrain, task, belief, predictive; options after a colon, "
                        "e.g. 'belief:beta=20 gram:rtol=1e-8 pretrain:ridge=1e-6,mc_samples=50000' (default: "
                        f"{' '.join(DEFAULT_KERNELS)}; for GINC's prompt laws {' '.join(GINC_KERNELS)})")
    g.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="forward-pass precision")
    g.add_argument("--forward", choices=["auto", "factorised", "general"], default="auto",
                   help="Bayes pass: the restart factorisation (per-demonstration likelihoods, every n in one pass) "
                        "where the HMM satisfies it, else the general prompt-long scan; GINC's prompt laws use GINC's "
                        "fast exact filter (config.json: forward = ginc); 'general' forces the scan")
    g.add_argument("--save-predictions", type=at.nonnegative_int, default=0, metavar="K",
                   help="also save the Bayes, Oracle and kernel vectors of the first K prompts")
    g = p.add_argument_group("run")
    add_run_arguments(g, "default")
    g.add_argument("--chunk", type=at.positive_int, default=256,
                   help="prompts sampled and evaluated at a time (one batch, split over the devices); memory "
                        "grows with chunk x max n, not with --prompts; the prompts do not depend on it, the numbers only to "
                        "float rounding")
    g.add_argument("--save-prompts", action=argparse.BooleanOptionalAction, default=True,
                   help="write each seed's prompts to prompts/seed_S.npz (needed by `bound RUN_DIR` and "
                        "transformer-check); they are [prompts, max n, l] int32 and held in memory until written, "
                        "so a scale run (e.g. 10^5 prompts x n = 1024: 2 GB) should pass --no-save-prompts, "
                        "which config.json records as \"save_prompts\": false")
    g = p.add_argument_group("several processes (jax.distributed; every process runs the same command)")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first: each batch is split over the devices of every "
                        "process, process 0 writes the run folder. Alone it detects the processes on SLURM, Open MPI, "
                        "Kubernetes or cloud TPU/GPU VMs; elsewhere give --coordinator, --num-processes, --process-id")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="process 0's address (implies --distributed)")
    g.add_argument("--num-processes", type=at.positive_int, default=None, help="number of processes (implies --distributed)")
    g.add_argument("--process-id", type=at.nonnegative_int, default=None, help="this process's index (implies --distributed)")


def config_from_args(args):
    from simulate.sweep import SweepConfig

    if args.grid is None:
        args.grid = (list(DEFAULT_GRID), False)
    return SweepConfig(preset=args.preset, preset_params=params(args.param), hmm_file=args.hmm_file,
                       grid=tuple(args.grid[0]), curve=args.grid[1], seeds=tuple(args.seeds), prompts_per_seed=args.prompts,
                       length=args.length, labels=tuple(args.labels) if args.labels else "auto",
                       num_labels=args.num_labels, label_mode=args.label_mode, task=args.task,
                       kernels=tuple(args.kernels) if args.kernels is not None else None, dtype=args.dtype,
                       forward=args.forward, save_predictions=args.save_predictions,
                       save_prompts=args.save_prompts, prompt_law=args.prompt_law, ginc_params=args.ginc_params)


def run(args) -> int:
    from pathlib import Path

    from simulate.runtime import setup

    setup(args.devices)
    manual = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in manual) and None in manual:
        raise UsageError("--coordinator, --num-processes and --process-id go together; give all three "
                         "(or --distributed alone on a cluster JAX detects)")
    if args.distributed or args.coordinator is not None:
        from simulate.runtime import init_distributed

        init_distributed(*manual)
    from simulate.sweep import format_table, run_sweep

    cfg = config_from_args(args)
    out = Path(args.runs_dir) / args.name
    summary = run_sweep(cfg, out, overwrite=args.overwrite, quiet=args.quiet, chunk=args.chunk)
    if not summary:
        import jax

        print(f"process {jax.process_index()} of {jax.process_count()}: done; process 0 writes {out}")
        return 0
    print(format_table(summary))
    print(f"run folder: {out}  ({summary['wall_seconds_this_call']:.1f} s)")
    return 0
