"""`icl-kernel model-info`: load a model offline, print its config, size and load time, and
optionally greedy continuations of a few prompts."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2",
                        help="'smollm2' (built-in SmolLM2-135M-Instruct), a .gguf file, or a Hugging Face "
                             "checkpoint folder (default: smollm2)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="parameter and activation dtype (default: float32)")
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                        help="prompt to continue greedily (repeatable; needs a tokenizer)")
    parser.add_argument("--max-new-tokens", type=int, default=12,
                        help="tokens generated per prompt (default: 12)")


def run(args) -> int:
    import dataclasses
    import time

    from llm_check.errors import InputError, TokenizerError
    from llm_check.loading import load_model, parameter_count
    from llm_check.models.generate import greedy_generate

    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {args.max_new_tokens}; expected a positive integer")
    loaded = load_model(args.model, dtype=args.dtype)
    cfg = loaded.config
    print(f"model: {args.model}")
    print(f"architecture: {cfg.architecture}")
    for field in dataclasses.fields(cfg):
        if field.name != "architecture":
            print(f"  {field.name}: {getattr(cfg, field.name)}")
    n = parameter_count(loaded.model)
    print(f"parameters: {n:,} ({n / 1e6:.1f} M)")
    print(f"dtype: {args.dtype}")
    print(f"load time: {loaded.load_seconds:.2f} s")
    print(f"tokenizer: {'yes' if loaded.tokenizer is not None else 'none in checkpoint'}")
    if args.prompt:
        tok = loaded.tokenizer
        if tok is None:
            raise TokenizerError(f"{args.model} has no tokenizer; --prompt needs one (tokenizer.json or GGUF metadata)")
        prompts = [tok.encode(p).ids for p in args.prompt]
        too_long = max(map(len, prompts)) + args.max_new_tokens
        if too_long > cfg.max_position_embeddings:
            from llm_check.errors import PromptTooLongError
            raise PromptTooLongError(
                f"prompt plus {args.max_new_tokens} new tokens is {too_long} tokens; expected at most {cfg.max_position_embeddings}")
        eos = tok.token_to_id("<|im_end|>")
        start = time.perf_counter()
        outs = greedy_generate(loaded.model, prompts, args.max_new_tokens, pad_id=0, eos_id=eos)
        print(f"greedy continuations ({time.perf_counter() - start:.2f} s incl. compile):")
        for text, ids in zip(args.prompt, outs):
            print(f"  {text!r} -> {tok.decode(ids)!r}")
    return 0
