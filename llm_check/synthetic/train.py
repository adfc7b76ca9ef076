r"""Pretraining the project's Flax NNX GPT-J on the simulator's distribution p_pre.

``run_pretrain(config, run_dir)`` is the pipeline behind ``icl-kernel pretrain``:

* data: documents of ``simulate.corpus`` (a batch is a pure function of (seed, step)), each
  prefixed with a BOS token (id = the HMM's vocabulary size) so that the model predicts every
  document token, the first one included; the loss is the mean next-token cross-entropy;
* optimiser: optax AdamW (weight decay on matrices only), linear warmup + cosine decay to 10% of
  the peak, global-norm gradient clipping;
* data parallel on accelerators: the batch axis is sharded over all local devices with the
  sweep's ``simulate.runtime.batch_sharding`` (parameters replicated), so one device or several
  need no code change; on CPU one device runs the step as a scan over chunks of the batch
  (gradient accumulation, :func:`micro_batch_size`); float32 on CPU, bfloat16 compute (float32
  master weights) on accelerators;
* evaluation: held-out documents' loss and its *excess* over the exact Bayes loss (nats/token),
  with the unigram and bigram models as further reference lines;
* run folder (through :mod:`icl_kernel.runfolder`)::

      config.json          resolved configuration (the run's identity)
      hmm.npz              the HMM
      references.json      Bayes / unigram / bigram held-out losses (nats/token)
      state.npz            training state: step, parameters, optimiser state, loss history
      metrics.csv          step, tokens, train loss, lr, grad norm, held-out loss, excess
      loss_curve.png       the curve with the reference lines
      hf/config.json, hf/model.safetensors   the final model as a transformers GPT-J folder
      summary.json

  The state is written atomically every ``checkpoint_every`` steps; a rerun with the same config
  resumes from it and ends bit-identical to an uninterrupted run (the data depend only on the step).

The state is one checksummed ``.npz`` written through the run folder rather than an orbax
checkpoint: the models here are a few MB, and the run folder's atomic write, sha256 and lock then
cover the state like every other file (an orbax directory would sit outside them).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from icl_kernel.errors import UserError
from icl_kernel.runfolder import RunFolder, RunFolderError, open_existing
from llm_check.errors import ConfigError
from llm_check.loading.export import hf_config_dict, hf_state_dict
from llm_check.models.gptj import GPTJConfig, GPTJModel
from simulate import corpus
from simulate.presets import build_preset, preset_defaults
from simulate.runtime import batch_sharding
from simulate.defaults import is_int
from simulate.sweep import hmm_sha256, load_run_hmm
from theory.hmm import HMM

COMMAND = "pretrain"
FORMAT_VERSION = 1

SIZES = {
    # name: (n_embd, n_layer, n_head)
    "tiny": (64, 2, 4),
    "small": (128, 4, 4),
    "base": (256, 6, 8),
}


class PretrainConfigError(UserError):
    """An invalid pretraining configuration (one-line message)."""


@dataclass
class PretrainConfig:
    """Everything that determines a training run's numbers (the run folder's identity)."""

    preset: str = "han"
    preset_params: dict = field(default_factory=dict)
    hmm_file: str | None = None
    size: str = "tiny"
    n_embd: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    n_inner: int | None = None
    context: int = 128
    batch_size: int = 32
    steps: int = 1000
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    seed: int = 0
    eval_every: int = 100
    eval_docs: int = 256
    ngram_docs: int = 2048
    checkpoint_every: int = 200
    compute_dtype: str = "auto"
    attention_impl: str = "einsum"

    def validate(self) -> None:
        ints = dict(context=2, batch_size=1, steps=1, warmup_steps=0, eval_every=1, eval_docs=1, ngram_docs=1,
                    checkpoint_every=1, seed=0)
        for name, lo in ints.items():
            v = getattr(self, name)
            if not is_int(v) or v < lo:
                raise PretrainConfigError(f"{name.replace('_', '-')} {v!r}, expected an integer >= {lo}")
        for name in ("learning_rate", "clip_norm"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise PretrainConfigError(f"{name.replace('_', '-')} {v!r}, expected a finite number > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise PretrainConfigError(f"weight-decay {self.weight_decay!r}, expected a finite number >= 0")
        if self.size not in SIZES:
            raise PretrainConfigError(f"size {self.size!r}, expected one of {', '.join(SIZES)}")
        for name in ("n_embd", "n_layer", "n_head", "n_inner"):
            v = getattr(self, name)
            if v is not None and (not is_int(v) or v < 1):
                raise PretrainConfigError(f"{name} {v!r}, expected an integer >= 1")
        if self.compute_dtype not in ("auto", "float32", "bfloat16"):
            raise PretrainConfigError(f"compute dtype {self.compute_dtype!r}, expected auto, float32 or bfloat16")
        if self.attention_impl not in ("einsum", "chunked", "xla", "cudnn"):
            raise PretrainConfigError(f"attention impl {self.attention_impl!r}, expected einsum, chunked, xla or cudnn")
        if self.hmm_file is not None and self.preset != "custom":
            raise PretrainConfigError(f"--hmm-file {self.hmm_file} is given with preset {self.preset!r}; "
                                      "expected --preset custom")


@dataclass(frozen=True)
class PretrainIdentity:
    """A resolved training run: every value that determines its numbers (the run folder's identity).

    :meth:`to_dict` is the run folder's ``config.json`` (and the summary's ``config``): the fields of
    ``config`` in order, then ``model``, ``bos``, ``format_version`` and, for a custom HMM, ``hmm_sha256``;
    :meth:`from_dict` reads one back.

    config:         PretrainConfig, as given, with ``preset_params`` completed by the preset's defaults
                    ({} for a custom HMM)
    model:          GPTJConfig, the model (vocabulary: the HMM's tokens plus BOS)
    bos:            int, the BOS token id (= the HMM's number of tokens)
    format_version: int, :data:`FORMAT_VERSION` of the run-folder layout
    hmm_sha256:     str | None, :func:`simulate.sweep.hmm_sha256` of a custom HMM (recorded only then)
    """

    config: PretrainConfig
    model: GPTJConfig
    bos: int
    format_version: int = FORMAT_VERSION
    hmm_sha256: str | None = None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self.config)
        out["model"] = dataclasses.asdict(self.model)
        out["bos"] = self.bos
        out["format_version"] = self.format_version
        if self.hmm_sha256 is not None:
            out["hmm_sha256"] = self.hmm_sha256
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainIdentity":
        """A run's identity from its config.json content; KeyError/TypeError/ConfigError if it is not one."""
        return cls(PretrainConfig(**{k: d[k] for k in PretrainConfig.__dataclass_fields__}),
                   GPTJConfig(**d["model"]), int(d["bos"]), d.get("format_version", FORMAT_VERSION),
                   d.get("hmm_sha256"))


def model_config(cfg: PretrainConfig, vocab_size: int) -> GPTJConfig:
    """The GPT-J config of a named size with the explicit overrides (one-line error if inconsistent)."""
    n_embd, n_layer, n_head = SIZES[cfg.size]
    n_embd = cfg.n_embd or n_embd
    n_layer = cfg.n_layer or n_layer
    n_head = cfg.n_head or n_head
    if n_embd % n_head:
        raise PretrainConfigError(f"n_embd={n_embd} is not a multiple of n_head={n_head}; expected heads that divide the width")
    head_dim = n_embd // n_head
    try:
        return GPTJConfig(vocab_size=vocab_size, n_positions=cfg.context, n_embd=n_embd, n_layer=n_layer,
                          n_head=n_head, rotary_dim=head_dim - head_dim % 2, n_inner=cfg.n_inner)
    except ConfigError as exc:
        raise PretrainConfigError(str(exc)) from None


def resolve(cfg: PretrainConfig) -> tuple[PretrainIdentity, HMM, GPTJConfig]:
    """Validate everything and return the run's identity, the HMM and the model config."""
    cfg.validate()
    with jax.enable_x64(True):  # the preset's float64 draws: the same HMM as a sweep's
        hmm = build_preset(cfg.preset, cfg.preset_params, cfg.hmm_file)
    mcfg = model_config(cfg, hmm.num_tokens + 1)
    params = dict(preset_defaults(cfg.preset), **cfg.preset_params) if cfg.preset != "custom" else {}
    ident = PretrainIdentity(dataclasses.replace(cfg, preset_params=params), mcfg, hmm.num_tokens, FORMAT_VERSION,
                             hmm_sha256(hmm) if cfg.preset == "custom" else None)
    return ident, hmm, mcfg


def compute_dtype(name: str):
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return getattr(jnp, name)


# ------------------------------------------------------------------ model, loss, step


def init_model(mcfg: GPTJConfig, seed: int) -> GPTJModel:
    """A freshly initialised float32 GPT-J (weights N(0, 0.02), biases 0, LayerNorm 1/0)."""
    return GPTJModel(mcfg, dtype=jnp.float32, rngs=nnx.Rngs(params=jax.random.fold_in(jax.random.PRNGKey(seed), 1)))


def all_logits(model: GPTJModel, ids, impl: str = "einsum"):
    """Logits at every position ``[B, S, V]`` float32 of a causal batch ``ids [B, S]`` (no padding):
    the model's forward without capture, its layers unrolled."""
    return model(ids, capture=None, impl=impl, scan=False).logits


def with_bos(docs, bos: int):
    """Model inputs and targets of documents ``[B, L]``: ``([BOS, o_0 .. o_{L-2}], [o_0 .. o_{L-1}])``."""
    docs = jnp.asarray(docs, jnp.int32)
    inputs = jnp.concatenate([jnp.full((docs.shape[0], 1), bos, jnp.int32), docs[:, :-1]], axis=1)
    return inputs, docs


def token_losses(graphdef, params, docs, bos: int, dtype, impl: str):
    """−log q(o_t | BOS, o_<t) per token ``[B, L]`` float32 (compute in ``dtype``)."""
    p = jax.tree.map(lambda a: a.astype(dtype), params)
    model = nnx.merge(graphdef, p)
    inputs, targets = with_bos(docs, bos)
    logits = all_logits(model, inputs, impl)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimiser's hyper-parameters (hashable: a static argument of the jitted step)."""

    learning_rate: float
    warmup_steps: int
    steps: int
    weight_decay: float
    clip_norm: float

    @classmethod
    def of(cls, cfg: "PretrainConfig") -> "OptimizerConfig":
        return cls(float(cfg.learning_rate), int(cfg.warmup_steps), int(cfg.steps), float(cfg.weight_decay),
                   float(cfg.clip_norm))


def make_optimizer(oc: OptimizerConfig):
    """AdamW (decay on ≥2-D weights), warmup + cosine to 10 % of the peak, global-norm clipping."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, oc.learning_rate, max(oc.warmup_steps, 1),
                                                  max(oc.steps, oc.warmup_steps + 1), oc.learning_rate * 0.1)
    decay_mask = lambda params: jax.tree.map(lambda a: a.ndim >= 2, params)  # noqa: E731
    return optax.chain(optax.clip_by_global_norm(oc.clip_norm),
                       optax.adamw(schedule, b1=0.9, b2=0.98, eps=1e-8, weight_decay=oc.weight_decay,
                                   mask=decay_mask)), schedule


class TrainState(NamedTuple):
    """Parameters and optimiser state (pytrees) and the number of steps taken."""

    params: object
    opt_state: object
    step: int


# Working-set budget of one chunk of a training step on CPU (see micro_batch_size).
CPU_CHUNK_BYTES = 24 * 2 ** 20


def micro_batch_size(batch: int, context: int, mcfg: GPTJConfig, backend: str | None = None) -> int:
    """Documents per gradient-accumulation chunk of a training step (a divisor of ``batch``).

    On CPU the step's activations are the cost, not its matmuls: XLA allocates the whole step's
    temporaries (about 200 MB for ``tiny`` at 64 x 128) as one fresh buffer per call, which the
    kernel maps and zero-fills page by page (a third of the step was system time), and the
    ``[B, H, S, S]`` attention tensors stream through memory instead of the caches. The step
    therefore runs as a ``lax.scan`` over chunks whose estimated working set (float32 attention
    probabilities and their gradients, the MLP activations, the residual stream; per layer) fits
    in ``CPU_CHUNK_BYTES``. Accelerators take the whole batch in one piece.
    """
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return batch
    S, H = context, mcfg.n_head
    per_doc = 4 * mcfg.n_layer * (3 * H * S * S + 4 * S * mcfg.intermediate_size + 10 * S * mcfg.n_embd)
    cap = max(1, CPU_CHUNK_BYTES // per_doc)
    return max(d for d in range(1, batch + 1) if batch % d == 0 and d <= cap)


def _chunked(docs, micro: int | None):
    """``docs [B, L]`` -> ``[B // micro, micro, L]`` (None: one chunk)."""
    B = docs.shape[0]
    m = B if micro is None or micro >= B or B % micro else micro
    return docs.reshape(B // m, m, docs.shape[1])


@partial(jax.jit, static_argnames=("graphdef", "opt", "bos", "dtype", "impl", "micro"), donate_argnums=(1, 2))
def train_step(graphdef, params, opt_state, docs, *, opt: OptimizerConfig, bos, dtype, impl, micro=None):
    """One AdamW step on documents ``docs [B, L]``: returns (params, opt_state, loss, grad norm).

    The loss and gradient are those of the mean token loss over the whole batch, accumulated over
    chunks of ``micro`` documents (:func:`micro_batch_size`; None: one chunk) as the mean of the
    chunks' means — equal chunks, so the same number up to float rounding (bit-identical with one
    chunk).
    """
    tx, _ = make_optimizer(opt)

    def loss_fn(p, d):
        return token_losses(graphdef, p, d, bos, dtype, impl).mean()

    chunks = _chunked(docs, micro)
    if chunks.shape[0] == 1:
        loss, grads = jax.value_and_grad(loss_fn)(params, chunks[0])
    else:
        def accumulate(carry, d):
            loss_c, grads_c = jax.value_and_grad(loss_fn)(params, d)
            return (carry[0] + loss_c, jax.tree.map(jnp.add, carry[1], grads_c)), None

        zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        # Two chunks per loop iteration: their forward/backward passes are independent, so XLA:CPU
        # runs them side by side on the cores (20 % faster than one chunk per iteration on 2 cores).
        (loss, grads), _ = jax.lax.scan(accumulate, zero, chunks, unroll=2)
        k = chunks.shape[0]
        loss, grads = loss / k, jax.tree.map(lambda g: g / k, grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)


@partial(jax.jit, static_argnames=("graphdef", "bos", "dtype", "impl", "micro"))
def eval_losses(graphdef, params, docs, *, bos, dtype, impl, micro=None):
    """Per-token held-out losses ``[B, L]`` (computed ``micro`` documents at a time; None: at once)."""
    chunks = _chunked(docs, micro)
    if chunks.shape[0] == 1:
        return token_losses(graphdef, params, chunks[0], bos, dtype, impl)
    out = jax.lax.map(lambda d: token_losses(graphdef, params, d, bos, dtype, impl), chunks)
    return out.reshape(docs.shape)


def data_sharding():
    """Where a step's documents live: ``(sharding, devices)``.

    On accelerators the batch axis is split over all local devices (:func:`batch_sharding`,
    parameters replicated). On CPU everything stays on one device: XLA's CPU "devices" share the
    same cores (each already multi-threaded), so splitting the batch over them only adds the
    gradient all-reduce, and it made the chunked step (:func:`micro_batch_size`) 1.5x slower.
    """
    if jax.default_backend() == "cpu":
        return jax.sharding.SingleDeviceSharding(jax.local_devices()[0]), 1
    return batch_sharding()


# ------------------------------------------------------------------ checkpoints


HISTORY = ("step", "tokens", "train_loss", "lr", "grad_norm", "heldout_loss", "excess_loss", "seconds")


def state_arrays(state: TrainState, history: dict) -> dict:
    leaves = jax.tree.leaves((state.params, state.opt_state))
    out = {f"leaf_{i:04d}": np.asarray(a) for i, a in enumerate(leaves)}
    out["step"] = np.asarray(state.step, np.int64)
    out.update({f"history|{k}": np.asarray(history[k], np.float64) for k in HISTORY})
    return out


def restore_state(arrays: dict, template: TrainState, where: str) -> tuple[TrainState, dict]:
    """The checkpoint's state on the template's tree structure (one-line error on any mismatch)."""
    leaves, treedef = jax.tree.flatten((template.params, template.opt_state))
    got = []
    for i, ref in enumerate(leaves):
        a = arrays.get(f"leaf_{i:04d}")
        if a is None or a.shape != np.shape(ref) or a.dtype != np.asarray(ref).dtype:
            raise RunFolderError(f"{where} does not match this model's training state (leaf {i}); "
                                 "delete it or use --overwrite")
        got.append(jnp.asarray(a))
    params, opt_state = jax.tree.unflatten(treedef, got)
    history = {k: list(arrays.get(f"history|{k}", np.zeros(0))) for k in HISTORY}
    return TrainState(params, opt_state, int(arrays["step"])), history


# ------------------------------------------------------------------ the run


def references(hmm: HMM, resolved: PretrainIdentity, heldout) -> dict:
    """Held-out Bayes, unigram and bigram losses (nats/token) on the evaluation documents."""
    train_docs = np.asarray(corpus.documents(corpus.split_key(resolved.config.seed, "train"), hmm,
                                             2 ** 31 - resolved.config.ngram_docs, resolved.config.ngram_docs,
                                             resolved.config.context))
    ng = corpus.ngram_losses(corpus.fit_ngrams(train_docs, hmm.num_tokens), heldout)
    with jax.enable_x64(True):
        bayes = corpus.bayes_loss(hmm, heldout, jnp.float64)
    return dict(bayes=bayes, unigram=ng["unigram"], bigram=ng["bigram"],
                heldout_docs=int(heldout.shape[0]), context=int(heldout.shape[1]),
                ngram_fit_docs=int(resolved.config.ngram_docs))


def load_trained(run_dir) -> tuple[GPTJModel, PretrainIdentity, HMM]:
    """The trained model (final parameters), the run's identity and HMM of a pretrain run folder."""
    rf = open_existing(run_dir, COMMAND)
    raw = rf.read_json("config.json")
    if not rf.exists("state.npz"):
        raise RunFolderError(f"{rf.path / 'state.npz'} not found; the training run has not saved a checkpoint")
    try:
        resolved = PretrainIdentity.from_dict(raw)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise RunFolderError(f"{rf.path / 'config.json'} has no usable model config ({exc})") from None
    model = init_model(resolved.model, 0)
    graphdef, params = nnx.split(model)
    tx, _ = make_optimizer(OptimizerConfig.of(resolved.config))
    state, _ = restore_state(rf.load_npz("state.npz"), TrainState(params, tx.init(params), 0),
                             str(rf.path / "state.npz"))
    return nnx.merge(graphdef, state.params), resolved, load_run_hmm(rf)


def run_pretrain(cfg: PretrainConfig, out_dir, *, overwrite: bool = False, quiet: bool = False,
                 stop_after_steps: int | None = None, save_corpus: int = 0, log=print) -> dict:
    """Train (or resume) into ``out_dir`` and return the summary.

    Everything is validated before the folder is created. ``stop_after_steps`` stops (after a
    checkpoint) once that many steps have been taken in this call — for tests of resumption.
    ``save_corpus`` also writes that many training shards (the documents of 100 steps each) and the
    held-out documents under ``corpus/`` (the corpus is otherwise streamed, never stored).
    """
    if not is_int(save_corpus) or save_corpus < 0:
        raise PretrainConfigError(f"save-corpus {save_corpus!r}, expected an integer >= 0")
    resolved, hmm, mcfg = resolve(cfg)
    bos = resolved.bos
    dtype = compute_dtype(cfg.compute_dtype)
    impl = cfg.attention_impl
    sharding, ndev = data_sharding()
    if cfg.batch_size % ndev:
        raise PretrainConfigError(f"batch size {cfg.batch_size} is not a multiple of the {ndev} local devices; "
                                  f"expected a multiple of {ndev}")
    t_start = time.perf_counter()
    with RunFolder.create(Path(out_dir), command=COMMAND, config=resolved.to_dict(), overwrite=overwrite, log=log) as rf:
        if not rf.is_done("hmm.npz"):
            rf.savez("hmm.npz", **hmm._asdict())
        cdfs = corpus.document_cdfs(hmm)
        heldout = np.asarray(corpus.documents(corpus.split_key(cfg.seed, "heldout"), hmm, 0, cfg.eval_docs,
                                              cfg.context, cdfs))
        if rf.is_done("references.json"):
            refs = rf.read_json("references.json")
        else:
            refs = references(hmm, resolved, heldout)
            rf.write_json("references.json", refs)
        bayes_heldout = refs["bayes"]
        if save_corpus:
            write_corpus(rf, hmm, cfg, heldout, save_corpus, cdfs)

        model = init_model(mcfg, cfg.seed)
        graphdef, params = nnx.split(model)
        opt = OptimizerConfig.of(cfg)
        tx, schedule = make_optimizer(opt)
        state = TrainState(params, tx.init(params), 0)
        history = {k: [] for k in HISTORY}
        if rf.is_done("state.npz"):
            state, history = restore_state(rf.load_npz("state.npz"), state, str(rf.path / "state.npz"))
            log(f"resuming {rf.path} at step {state.step}")
        elif rf.is_corrupted("state.npz"):
            log(f"{rf.path / 'state.npz'} is corrupted (checksum mismatch); training from step 0")
        params, opt_state = state.params, state.opt_state
        train_key = corpus.split_key(cfg.seed, "train")
        heldout_dev = jax.device_put(heldout, sharding) if cfg.eval_docs % ndev == 0 else jnp.asarray(heldout)
        micro = micro_batch_size(cfg.batch_size, cfg.context, mcfg)
        eval_micro = micro_batch_size(cfg.eval_docs, cfg.context, mcfg)
        tokens_per_step = cfg.batch_size * cfg.context
        bar = tqdm(total=cfg.steps, initial=state.step, unit="step", disable=quiet, dynamic_ncols=True,
                   desc=f"pretrain {Path(out_dir).name}")
        step = state.step
        taken = 0
        t_last, step_last = time.perf_counter(), step
        t_loop, seconds_before = t_last, (history["seconds"][-1] if history["seconds"] else 0.0)
        while step < cfg.steps:
            docs = corpus.documents(train_key, hmm, step * cfg.batch_size, cfg.batch_size, cfg.context, cdfs)
            params, opt_state, loss, gnorm = train_step(graphdef, params, opt_state, jax.device_put(docs, sharding),
                                                        opt=opt, bos=bos, dtype=dtype, impl=impl, micro=micro)
            step += 1
            taken += 1
            if step % cfg.eval_every == 0 or step == cfg.steps:
                held = float(np.asarray(eval_losses(graphdef, params, heldout_dev, bos=bos, dtype=dtype,
                                                    impl=impl, micro=eval_micro)).mean())
                now = time.perf_counter()
                rate = (step - step_last) * tokens_per_step / max(now - t_last, 1e-9)
                t_last, step_last = now, step
                row = dict(step=step, tokens=step * tokens_per_step, train_loss=float(loss),
                           lr=float(schedule(step - 1)), grad_norm=float(gnorm), heldout_loss=held,
                           excess_loss=held - bayes_heldout, seconds=seconds_before + now - t_loop)
                for k in HISTORY:
                    history[k].append(row[k])
                bar.set_postfix(loss=f"{float(loss):.4f}", excess=f"{held - bayes_heldout:.4f}",
                                tok_s=f"{rate:,.0f}", refresh=False)
            bar.update(1)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or (
                    stop_after_steps is not None and taken >= stop_after_steps):
                rf.savez("state.npz", **state_arrays(TrainState(params, opt_state, step), history))
                write_metrics(rf, history, refs)
            if stop_after_steps is not None and taken >= stop_after_steps and step < cfg.steps:
                bar.close()
                return dict(stopped_at=step)
        bar.close()
        if not rf.is_done("state.npz"):
            rf.savez("state.npz", **state_arrays(TrainState(params, opt_state, step), history))
        final = nnx.merge(graphdef, params)
        export_hf(rf, final)
        write_metrics(rf, history, refs)
        summary = dict(config=resolved.to_dict(), references=refs, steps=step, tokens=step * tokens_per_step,
                       final_heldout_loss=history["heldout_loss"][-1], final_excess_loss=history["excess_loss"][-1],
                       parameters=int(sum(np.size(a) for a in jax.tree.leaves(params))),
                       train_seconds_estimate=history["seconds"][-1],
                       wall_seconds_this_call=time.perf_counter() - t_start, devices=ndev,
                       backend=jax.default_backend(), compute_dtype=jnp.dtype(dtype).name)
        rf.write_json("summary.json", summary)
    return summary


def write_corpus(rf: RunFolder, hmm: HMM, cfg: PretrainConfig, heldout, shards: int, cdfs) -> None:
    """corpus/heldout.npz and corpus/train_KKKK.npz (``docs [100 * batch, L]``, ``first_step``)."""
    tok = np.uint8 if hmm.num_tokens <= 256 else np.int32
    if not rf.is_done("corpus/heldout.npz"):
        rf.savez("corpus/heldout.npz", docs=np.asarray(heldout, tok))
    key = corpus.split_key(cfg.seed, "train")
    per = 100 * cfg.batch_size
    for k in range(shards):
        rel = f"corpus/train_{k:04d}.npz"
        if not rf.is_done(rel):
            docs = np.asarray(corpus.documents(key, hmm, k * per, per, cfg.context, cdfs), tok)
            rf.savez(rel, docs=docs, first_step=np.asarray(100 * k))


def export_hf(rf: RunFolder, model: GPTJModel) -> None:
    """The model as a transformers GPT-J folder ``hf/`` (config.json + model.safetensors), atomically."""
    from safetensors.numpy import save

    rf.write_json("hf/config.json", hf_config_dict(model.config))
    rf.write_bytes("hf/model.safetensors", save(hf_state_dict(model)))


def write_metrics(rf: RunFolder, history: dict, refs: dict) -> None:
    """metrics.csv and loss_curve.png from the evaluation history."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HISTORY)
    for row in zip(*(history[k] for k in HISTORY)):
        w.writerow([int(v) if k in ("step", "tokens") else f"{v:.6g}" for k, v in zip(HISTORY, row)])
    rf.write_text("metrics.csv", buf.getvalue())
    if history["step"]:
        with rf.atomic_path("loss_curve.png") as tmp:
            plot_loss_curve(history, refs, tmp)


def plot_loss_curve(history: dict, refs: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tok = np.asarray(history["tokens"], float) / 1e6
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(tok, history["train_loss"], lw=1, alpha=0.6, label="train batch loss")
    ax.plot(tok, history["heldout_loss"], lw=2, label="held-out loss")
    for name, style in (("unigram", ":"), ("bigram", "-."), ("bayes", "--")):
        ax.axhline(refs[name], color="k", ls=style, lw=1, label=f"{name} ({refs[name]:.4f})")
    lo = refs["bayes"] - 0.02
    hi = max(refs["unigram"] + 0.08, lo + 0.1)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ex = history["excess_loss"][-1]
    ax.set_title(f"GPT-J on p_pre: held-out excess over Bayes {ex:.4f} nats/token")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
