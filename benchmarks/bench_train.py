"""Training speed of `icl-kernel pretrain`: tokens/s, model-FLOP utilisation against this machine's
measured float32 matmul rate, and the same model's training step in transformers + torch, measured in
the same run.

    .venv/bin/python benchmarks/bench_train.py [--size tiny] [--batch 64] [--context 128] [--steps 20]

Model FLOPs per token (forward + backward) = 6 N + 6 L S D (N parameters, L layers, S context,
D width: the attention score and value matmuls, causal half counted). MFU = achieved model FLOP/s
divided by the measured rate of a large float32 matmul (jnp.dot, all devices' threads).
"""
from __future__ import annotations

import argparse
import os
import time

from simulate.runtime import setup


def matmul_rate(n: int = 1024, reps: int = 20) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        out = f(a, a)
    out.block_until_ready()
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def jax_rate(cfg, steps: int) -> tuple[float, int]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from llm_check import train
    from simulate import corpus

    resolved, hmm, mcfg = train.resolve(cfg)
    graphdef, params = nnx.split(train.init_model(mcfg, 0))
    opt = train.OptimizerConfig.of(cfg)
    tx, _ = train.make_optimizer(opt)
    opt_state = tx.init(params)
    sharding, _ = train.batch_sharding()
    cdfs = corpus.document_cdfs(hmm)
    key = corpus.split_key(0, "train")
    batches = [jax.device_put(corpus.documents(key, hmm, i * cfg.batch_size, cfg.batch_size, cfg.context, cdfs),
                              sharding) for i in range(steps + 2)]
    kw = dict(opt=opt, bos=resolved["bos"], dtype=train.compute_dtype(cfg.compute_dtype), impl=cfg.attention_impl)
    for b in batches[:2]:
        params, opt_state, loss, _ = train.train_step(graphdef, params, opt_state, b, **kw)
    loss.block_until_ready()
    t = time.perf_counter()
    for b in batches[2:]:
        params, opt_state, loss, _ = train.train_step(graphdef, params, opt_state, b, **kw)
    loss.block_until_ready()
    n_params = sum(int(a.size) for a in jax.tree.leaves(params))
    return steps * cfg.batch_size * cfg.context / (time.perf_counter() - t), n_params, mcfg, hmm, resolved


def torch_rate(mcfg, hmm, resolved, cfg, steps: int) -> float:
    import numpy as np
    import torch
    import transformers

    from llm_check.loading.export import hf_config_dict
    from simulate import corpus

    torch.set_num_threads(os.cpu_count() or 1)
    hf_cfg = {k: v for k, v in hf_config_dict(mcfg).items() if k not in ("architectures", "model_type")}
    model = transformers.GPTJForCausalLM(transformers.GPTJConfig(**hf_cfg, attn_implementation="eager"))
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    key = corpus.split_key(0, "train")
    docs = np.asarray(corpus.documents(key, hmm, 0, cfg.batch_size * (steps + 2), cfg.context))
    bos = resolved["bos"]

    def step(i):
        d = torch.as_tensor(docs[i * cfg.batch_size:(i + 1) * cfg.batch_size], dtype=torch.long)
        inputs = torch.cat([torch.full((d.shape[0], 1), bos, dtype=torch.long), d[:, :-1]], dim=1)
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), d.reshape(-1))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        optim.step()
        return loss

    for i in range(2):
        step(i)
    t = time.perf_counter()
    for i in range(2, steps + 2):
        step(i)
    return steps * cfg.batch_size * cfg.context / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--devices", type=int, default=None)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    setup(args.devices, enable_x64=False)
    import jax

    from llm_check import train

    cfg = train.PretrainConfig(preset_params=dict(num_tasks=4, num_states=8, num_tokens=10, emit_conc=1.0,
                                                  delim_rate=0.2), size=args.size, batch_size=args.batch,
                               context=args.context, steps=1000)
    peak = matmul_rate()
    tok_s, n_params, mcfg, hmm, resolved = jax_rate(cfg, args.steps)
    flops_tok = 6 * n_params + 6 * mcfg.n_layer * args.context * mcfg.n_embd
    print(f"backend {jax.default_backend()}, {len(jax.local_devices())} devices, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.2f} (timings on a shared machine are lower bounds)")
    print(f"measured float32 matmul rate: {peak / 1e9:.1f} GFLOP/s")
    print(f"model {args.size}: {n_params:,} parameters, {flops_tok / 1e6:.2f} MFLOP/token (fwd+bwd)")
    print(f"JAX/Flax NNX train step: {tok_s:,.0f} tokens/s, {tok_s * flops_tok / 1e9:.1f} GFLOP/s, "
          f"MFU {tok_s * flops_tok / peak:.1%} of the measured matmul rate")
    if not args.no_torch:
        t_tok = torch_rate(mcfg, hmm, resolved, cfg, args.steps)
        print(f"transformers+torch train step (same model, eager attention, AdamW): {t_tok:,.0f} tokens/s")
        print(f"ratio JAX / torch: {tok_s / t_tok:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
