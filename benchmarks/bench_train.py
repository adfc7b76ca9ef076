"""Training speed of `icl-kernel pretrain`: tokens/s, model-FLOP utilisation against this machine's
measured float32 matmul rate, and the same model's training step in transformers + torch, measured in
the same run.

    .venv/bin/python benchmarks/bench_train.py [--size tiny] [--batch 64] [--context 128] [--steps 6]
                                               [--rounds 5] [--no-torch-compile] [--no-torch]

Model FLOPs per token (forward + backward) = 6 N + 6 L S D (N parameters, L layers, S context,
D width: the attention score and value matmuls, causal half counted). MFU = achieved model FLOP/s
divided by the measured rate of a 1024^3 float32 matmul (jnp.dot, all threads), the best rate seen
in the run (measured at the start and in every round).

The JAX step is `llm_check.synthetic.train.train_step` exactly as `icl-kernel pretrain` runs it (same sharding,
same chunking of the batch, documents drawn each step). transformers + torch runs the same GPT-J
(transformers' GPTJForCausalLM, AdamW, clipping) in every configuration that could be its fastest:
attention eager or sdpa, torch threads 1 or all cores (on a shared machine fewer threads can win),
and sdpa under torch.compile at both thread counts (skip with --no-torch-compile). Each round runs a
block of JAX steps and then a block of each torch configuration, so all see the same machine load;
the ratio of a round is the fastest torch configuration's median step time in that round over JAX's,
and the reported ratio is the median over rounds. Load averages are printed at the start and the end:
on a shared machine every number is a lower bound.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from simulate.runtime import setup


def matmul_rate(n: int = 1024, reps: int = 20, tries: int = 2, dtype: str = "float32") -> float:
    """FLOP/s of ``reps`` back-to-back n x n x n matmuls in ``dtype`` on the default device (best of ``tries``)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = 0.0
    for _ in range(tries):
        t = time.perf_counter()
        for _ in range(reps):
            out = f(a, a)
        out.block_until_ready()
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best


def model_flops_per_token(n_params: int, mcfg, context: int) -> int:
    """Training FLOPs per token, forward + backward: 6 N + 6 L S D (see the module docstring)."""
    return 6 * n_params + 6 * mcfg.n_layer * context * mcfg.n_embd


class JaxStep:
    """`icl-kernel pretrain`'s compiled step on the documents of steps 0, 1, ..."""

    def __init__(self, cfg):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from llm_check.synthetic import train
        from simulate import corpus

        self.jax, self.train = jax, train
        self.resolved, self.hmm, self.mcfg = train.resolve(cfg)
        self.graphdef, self.params = nnx.split(train.init_model(self.mcfg, 0))
        self.opt = train.OptimizerConfig.of(cfg)
        tx, _ = train.make_optimizer(self.opt)
        self.opt_state = tx.init(self.params)
        self.sharding, self.ndev = train.data_sharding()
        self.micro = train.micro_batch_size(cfg.batch_size, cfg.context, self.mcfg)
        self.cfg, self.cdfs, self.key = cfg, corpus.document_cdfs(self.hmm), corpus.split_key(0, "train")
        self.corpus = corpus
        self.kw = dict(opt=self.opt, bos=self.resolved.bos, dtype=train.compute_dtype(cfg.compute_dtype),
                       impl=cfg.attention_impl, micro=self.micro)
        self.i = 0
        self.n_params = sum(int(a.size) for a in jax.tree.leaves(self.params))
        self.run(2)  # compile + warm-up

    def run(self, steps: int) -> list[float]:
        """Seconds per step, as the training loop runs it (documents drawn and placed each step)."""
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            docs = self.corpus.documents(self.key, self.hmm, self.i * self.cfg.batch_size, self.cfg.batch_size,
                                         self.cfg.context, self.cdfs)
            self.params, self.opt_state, loss, _ = self.train.train_step(
                self.graphdef, self.params, self.opt_state, self.jax.device_put(docs, self.sharding), **self.kw)
            loss.block_until_ready()
            times.append(time.perf_counter() - t)
            self.i += 1
        return times


class TorchStep:
    """transformers' GPTJForCausalLM training step (AdamW, clipping) in one configuration."""

    def __init__(self, mcfg, hmm, resolved, cfg, *, attn: str, threads: int, compile: bool, steps: int):
        import torch
        import transformers

        from llm_check.loading.export import hf_config_dict
        from simulate import corpus

        self.torch, self.threads = torch, threads
        self.name = (f"{attn} attention, {threads} thread{'s' if threads > 1 else ''}"
                     + (", torch.compile" if compile else ""))
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        hf_cfg = {k: v for k, v in hf_config_dict(mcfg).items() if k not in ("architectures", "model_type")}
        self.model = transformers.GPTJForCausalLM(transformers.GPTJConfig(**hf_cfg, attn_implementation=attn))
        self.model.train()
        self.optim = torch.optim.AdamW(self.model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.98),
                                       weight_decay=cfg.weight_decay)
        self.clip = cfg.clip_norm
        docs = np.array(corpus.documents(corpus.split_key(0, "train"), hmm, 0, cfg.batch_size * steps, cfg.context))
        self.docs = torch.as_tensor(docs, dtype=torch.long).reshape(steps, cfg.batch_size, cfg.context)
        self.bos = resolved.bos

        def loss_fn(inputs, targets):
            logits = self.model(input_ids=inputs).logits
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

        self.loss_fn = torch.compile(loss_fn) if compile else loss_fn
        self.i = 0
        self.run(3 if compile else 2)  # compile + warm-up

    def run(self, steps: int) -> list[float]:
        torch = self.torch
        torch.set_num_threads(self.threads)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            d = self.docs[self.i % len(self.docs)]
            inputs = torch.cat([torch.full((d.shape[0], 1), self.bos, dtype=torch.long), d[:, :-1]], dim=1)
            loss = self.loss_fn(inputs, d)
            self.optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.optim.step()
            times.append(time.perf_counter() - t)
            self.i += 1
        return times


def load() -> str:
    return "{:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of one block per configuration")
    ap.add_argument("--devices", type=int, default=None)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-torch-compile", action="store_true", help="do not try torch.compile")
    args = ap.parse_args()
    setup(args.devices, enable_x64=False)
    import jax

    from llm_check.synthetic import train

    print(f"load average (1, 5, 15 min) at start: {load()}")
    cfg = train.PretrainConfig(preset_params=dict(num_tasks=4, num_states=8, num_tokens=10, emit_conc=1.0,
                                                  delim_rate=0.2), size=args.size, batch_size=args.batch,
                               context=args.context, steps=1000)
    peak = matmul_rate()
    js = JaxStep(cfg)
    flops_tok = model_flops_per_token(js.n_params, js.mcfg, args.context)
    tokens = args.batch * args.context
    print(f"backend {jax.default_backend()}, {len(jax.local_devices())} devices ({js.ndev} used by the step), "
          f"{os.cpu_count()} cores; batch chunks of {js.micro} documents")
    print(f"model {args.size}: {js.n_params:,} parameters, {flops_tok / 1e6:.2f} MFLOP/token (fwd+bwd), "
          f"{tokens:,} tokens/step")

    torch_steps = []
    if not args.no_torch:
        import transformers
        transformers.logging.set_verbosity_error()
        threads = sorted({1, os.cpu_count() or 1})
        configs = [(attn, th, False) for attn in ("eager", "sdpa") for th in threads]
        if not args.no_torch_compile:
            configs += [("sdpa", th, True) for th in threads]
        for attn, th, comp in configs:
            try:
                torch_steps.append(TorchStep(js.mcfg, js.hmm, js.resolved, cfg, attn=attn, threads=th, compile=comp,
                                             steps=args.steps))
            except Exception as exc:  # e.g. no compiler toolchain for torch.compile: compare without it
                print(f"  torch configuration {attn}/{th}/compile={comp} unavailable "
                      f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")

    jt, tt, ratios = [], {t.name: [] for t in torch_steps}, []
    for r in range(args.rounds):
        peak = max(peak, matmul_rate(tries=1))
        j = js.run(args.steps)
        jt += j
        meds = {}
        for t in torch_steps:
            ts = t.run(args.steps)
            tt[t.name] += ts
            meds[t.name] = float(np.median(ts))
        if meds:
            ratios.append(min(meds.values()) / float(np.median(j)))
        print(f"  round {r + 1}: JAX {tokens / np.median(j):,.0f} tokens/s; torch "
              + ", ".join(f"{k} {tokens / v:,.0f}" for k, v in meds.items()) + f"; load {os.getloadavg()[0]:.2f}")

    j_tok = tokens / float(np.median(jt))
    print(f"load average at end: {load()} (timings on a shared machine are lower bounds)")
    print(f"measured float32 matmul rate: {peak / 1e9:.1f} GFLOP/s (best of the run)")
    print(f"JAX/Flax NNX train step: {j_tok:,.0f} tokens/s (median of {len(jt)} steps, best "
          f"{tokens / min(jt):,.0f}), {j_tok * flops_tok / 1e9:.1f} GFLOP/s, MFU {j_tok * flops_tok / peak:.1%} "
          f"of the measured matmul rate (target >= 35%)")
    if torch_steps:
        for name, ts in tt.items():
            print(f"transformers+torch train step ({name}): {tokens / np.median(ts):,.0f} tokens/s "
                  f"(median of {len(ts)} steps)")
        print(f"ratio JAX / fastest torch configuration, median over {len(ratios)} rounds: {np.median(ratios):.2f}x "
              f"(rounds {min(ratios):.2f}-{max(ratios):.2f}; target >= 1.5x)")


if __name__ == "__main__":
    main()
