"""`icl-kernel pretrain`: train the project's GPT-J on the simulator's pretraining distribution."""
from __future__ import annotations

import argparse

from icl_kernel import argtypes as at
from simulate.commands.sweep import add_preset_arguments, add_run_arguments, params

SIZES_HELP = "tiny (64 wide, 2 layers, 4 heads), small (128, 4, 4), base (256, 6, 8)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.description = (
        "Train a GPT-J (Flax NNX) on documents streamed from an HMM pretraining distribution p_pre "
        "(optax AdamW, warmup + cosine, clipping; data parallel over local devices). Reports the held-out "
        "loss and its excess over the exact Bayes loss; writes runs/NAME/ (resumable) with the loss curve, "
        "checkpoints and the final model as a Hugging Face GPT-J folder (hf/).")
    add_preset_arguments(p)
    g = p.add_argument_group("model")
    g.add_argument("--size", choices=["tiny", "small", "base"], default="tiny", help=SIZES_HELP)
    g.add_argument("--n-embd", type=at.positive_int, default=None, help="override the width")
    g.add_argument("--n-layer", type=at.positive_int, default=None, help="override the number of layers")
    g.add_argument("--n-head", type=at.positive_int, default=None, help="override the number of heads")
    g.add_argument("--n-inner", type=at.positive_int, default=None, help="override the MLP width (default 4 x width)")
    g.add_argument("--context", type=at.positive_int, default=128, help="document length L in tokens (+1 BOS)")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=at.positive_int, default=1000, help="optimiser steps")
    g.add_argument("--batch-size", type=at.positive_int, default=32, help="documents per step (all devices)")
    g.add_argument("--lr", type=at.finite_float, default=3e-3, help="peak learning rate")
    g.add_argument("--warmup", type=at.nonnegative_int, default=100, help="linear warmup steps")
    g.add_argument("--weight-decay", type=at.finite_float, default=0.01, help="AdamW weight decay (matrices)")
    g.add_argument("--clip", type=at.finite_float, default=1.0, help="global gradient-norm clip")
    g.add_argument("--seed", type=at.nonnegative_int, default=0, help="initialisation and data seed")
    g.add_argument("--eval-every", type=at.positive_int, default=100, help="steps between held-out evaluations")
    g.add_argument("--eval-docs", type=at.positive_int, default=256, help="held-out documents")
    g.add_argument("--checkpoint-every", type=at.positive_int, default=200, help="steps between checkpoints")
    g.add_argument("--compute-dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="auto: float32 on CPU, bfloat16 on accelerators (float32 master weights)")
    g.add_argument("--attention", choices=["einsum", "chunked", "xla", "cudnn"], default="einsum",
                   help="attention implementation")
    g.add_argument("--save-corpus", type=at.nonnegative_int, default=0, metavar="SHARDS",
                   help="also write the first SHARDS training shards (one shard = the documents of 100 steps) "
                        "to corpus/ (the corpus is otherwise streamed and never stored)")
    g = p.add_argument_group("run")
    add_run_arguments(g, "pretrain")


def config_from_args(args):
    from llm_check.synthetic.train import PretrainConfig

    return PretrainConfig(preset=args.preset, preset_params=params(args.param), hmm_file=args.hmm_file,
                          size=args.size, n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head,
                          n_inner=args.n_inner, context=args.context, batch_size=args.batch_size, steps=args.steps,
                          learning_rate=args.lr, warmup_steps=args.warmup, weight_decay=args.weight_decay,
                          clip_norm=args.clip, seed=args.seed, eval_every=args.eval_every, eval_docs=args.eval_docs,
                          checkpoint_every=args.checkpoint_every, compute_dtype=args.compute_dtype,
                          attention_impl=args.attention)


def run(args) -> int:
    from pathlib import Path

    from simulate.runtime import setup

    setup(args.devices, enable_x64=False)
    from llm_check.synthetic.train import run_pretrain

    cfg = config_from_args(args)
    out = Path(args.runs_dir) / args.name
    s = run_pretrain(cfg, out, overwrite=args.overwrite, quiet=args.quiet, save_corpus=args.save_corpus)
    r = s["references"]
    print(f"held-out loss {s['final_heldout_loss']:.4f} nats/token; Bayes {r['bayes']:.4f}, bigram {r['bigram']:.4f}, "
          f"unigram {r['unigram']:.4f}; excess over Bayes {s['final_excess_loss']:.4f}")
    print(f"{s['parameters']:,} parameters, {s['steps']} steps, {s['tokens']:,} tokens; "
          f"run folder: {out}  ({s['wall_seconds_this_call']:.1f} s)")
    return 0
