r"""A GPT-J pretrained on p_pre, scored on a sweep's prompts as one more predictor beside exact Bayes,
the Oracle and the kernels.

``run_transformer_check(config, run_dir)`` reads a ``pretrain`` run folder (the model) and a
``sweep`` run folder (its HMM, labels, grid and ``prompts/seed_S.npz``). Exact Bayes, the Oracle,
every kernel's estimate ŷ_n and every kernel weight K(x_test, x_i) come from the simulator's
evaluator (:func:`simulate.evaluator.make_evaluator` / :func:`~simulate.evaluator.evaluate_prompts`,
float64, the general forward scan) on those prompts, and every predictor is scored by the same
functions (:func:`simulate.metrics.predictor_metrics`). The model reads ``BOS x_1 y_1 δ … x_n y_n δ
x_test`` (a prefix of a p_pre document, as in training) and

* its next-token distribution at the last x_test token, renormalised over the label set Y, is
  compared with Bayes and the Oracle at every n of the grid (L1, argmax agreement), on the same
  axes as each kernel's estimate ŷ_n;
* at the largest n, every head's attention row from the last x_test token is read at each
  demonstration's label y_i, at the delimiter after it, and summed over its span [x_i, y_i, δ],
  normalised over the demonstrations, and compared with each kernel's normalised weights
  K(x_test, x_i) / Σ_j K(x_test, x_j): mean per-prompt Pearson and Spearman correlation and the L1
  distance between the two weight vectors; the reconstruction ỹ = Σ_i a_i e(y_i)
  (:func:`llm_check.realdata.analysis.reconstruct`, rule ``soft``) is scored against the
  transformer's own prediction and against Bayes. Heads are selected on one half of the prompts
  (even positions) and reported on the other half (odd positions), as in the paper's §5.5;
* baselines beside every number: uniform weights (the label-frequency estimator), the kernel's
  weights shuffled within each prompt, and a head drawn at random;
* position controls, with the real-data check's position baselines
  (:func:`llm_check.realdata.analysis.position_baselines`): per read, the head whose vote
  (reconstruction rule ``argmax``) agrees most with the transformer's argmax on the even prompts,
  beside the last demonstration's label, its position-only vote (each slot weighted by that head's
  mean attention there over the even prompts), the majority label and a constant (the target's most
  frequent class on the even prompts), all against the transformer's and Bayes' argmax on the odd
  prompts, with exact McNemar tests of the head against each; and for every head and kernel the
  pooled correlation of attention with the kernel's normalised weights before and after removing
  position, with a within-position permutation p-value.

GINC sweeps (prompt laws ``ginc-id`` / ``ginc-ood`` of ``icl-kernel sweep --preset ginc``) are scored as
the sweep scores them, by the sweep's own evaluator (:func:`simulate.sweep.make_run_evaluator`):
Y is every symbol; Bayes is exact under p_pre where P(prompt_n | p_pre) > 0 and undefined (NaN, left
out of every mean, its fraction reported) where it is 0; the Oracle is GINC's ``score`` under the
prompt law (:func:`simulate.ginc.oracle`, recomputed from each prompt's start slot and checked against
the saved test labels; undefined where x_test is impossible under it, as for some OOD prompts); every
method is also scored by GINC's accuracy, argmax = the prompt's label, per n with the number of prompts
behind each mean (``count_*``). Grid points whose prompts ``BOS + n(k+1) + k-1`` tokens exceed the
model's context are skipped with a one-line note (GINC skips prompts over 1024 tokens); the attention
reads are at the largest n that fits. The model and the sweep are the same p_pre when their HMM arrays
agree to :data:`HMM_ATOL` (a ``--preset ginc`` model or a ``--preset custom`` file of the same arrays).

Run folder (through :mod:`icl_kernel.runfolder`)::

    config.json             model and sweep folders (with their config hashes), kernels, seeds
    cells/seed_S.npz        per prompt: transformer, Bayes, Oracle, kernel ŷ ``[P, G, |Y|]``;
                            attention reads ``[P, L, H, 3, N]``; kernel weights ``[P, k, N]``
    metrics.csv             per method and n: L1 to Bayes, L1 to Oracle, accuracy vs Oracle (GINC: also
                            accuracy vs the prompt's label and the prompt counts)
    summary.json            the above means, per-head correlation maps, the selected heads, position controls
    error_vs_n.png, head_map.png, attention_scatter.png, position_map.png
"""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from icl_kernel.errors import UserError
from icl_kernel.runfolder import RunFolder, open_existing
from llm_check.models import forward
from llm_check.realdata import analysis as ra
from llm_check.synthetic import plots, train
from simulate import metrics
from simulate.evaluator import Evaluation, PreparedKernels, evaluate_prompts, make_evaluator, prepare_kernels
from simulate.forward import prompt_tokens
from simulate.sampling import Prompts
from simulate.sweep import SweepIdentity, load_prompts, load_run_hmm, make_run_evaluator, run_ginc_params
from theory import kernels as tk
from theory.hmm import HMM

COMMAND = "transformer-check"
READS = ("label", "delim", "span")
SCORING_DTYPE = "float64"           # the evaluator's precision for Bayes, the Oracle and the kernels
SCORING_FORWARD = "general"         # its Bayes pass (the prompt-long scan)
EVAL_CHUNK = 256                    # prompts per evaluator batch


class TransformerCheckError(UserError):
    """An unusable model/sweep pair or option (one-line message)."""


@dataclass(frozen=True)
class CheckConfig:
    """What the user asks for: the two run folders and the options of ``icl-kernel transformer-check``."""

    model_run: str
    sweep_run: str
    kernels: tuple | None = None      # default: the sweep's kernels
    seeds: tuple | None = None        # default: every sweep seed with saved prompts
    chunk: int = 128
    seed: int = 0                     # shuffles and the random head


# ------------------------------------------------------------------ positions and reads


class DemoPositions(NamedTuple):
    """Token positions of each demonstration i < n in ``BOS x_1 y_1 δ … x_n y_n δ x_test`` (``[n]`` each).

    ``span_start .. span_end`` (inclusive) covers x_i, y_i and δ; ``query`` is the last x_test token.
    """

    label: np.ndarray
    delim: np.ndarray
    span_start: np.ndarray
    span_end: np.ndarray
    query: int


def demo_positions(n: int, length: int, offset: int = 1) -> DemoPositions:
    start = offset + np.arange(n) * (length + 2)
    return DemoPositions(start + length, start + length + 1, start, start + length + 1,
                         offset + n * (length + 2) + length - 1)


def model_inputs(pr: Prompts, n: int, delim: int, bos: int) -> np.ndarray:
    """``[P, 1 + n(l+2) + l]`` token ids: BOS, then the n-demonstration prompt."""
    body = np.asarray(prompt_tokens(np.asarray(pr.demos_x), np.asarray(pr.demos_y), np.asarray(pr.x_test), n, delim))
    return np.concatenate([np.full((body.shape[0], 1), bos, np.int32), body.astype(np.int32)], axis=1)


def attention_reads(rows, pos: DemoPositions) -> np.ndarray:
    """Attention rows ``[..., S]`` → per-demonstration weights ``[..., 3, n]`` (label, delim, span),
    each normalised over the demonstrations."""
    rows = np.asarray(rows, np.float64)
    csum = np.concatenate([np.zeros(rows.shape[:-1] + (1,)), np.cumsum(rows, -1)], -1)
    span = csum[..., pos.span_end + 1] - csum[..., pos.span_start]
    out = np.stack([rows[..., pos.label], rows[..., pos.delim], span], axis=-2)
    return out / out.sum(-1, keepdims=True)


# ------------------------------------------------------------------ comparisons


def compare_weights(att, ker) -> dict:
    """Per-prompt Pearson, Spearman and L1 between weight vectors ``att [..., n]`` and ``ker [..., n]``
    (:mod:`simulate.metrics`; NaN where a row is constant or not finite)."""
    att = np.asarray(att, float)
    ker = np.broadcast_to(np.asarray(ker, float), att.shape)
    # Ranks of values equal up to rounding (identical x_i give identical weights) are ties.
    return dict(pearson=metrics.pearson_rows(att, ker), spearman=metrics.spearman_rows(att, ker),
                l1=metrics.l1(att, ker))


def normalised(k):
    """Weights ``[..., n]`` divided by their sum over the last axis."""
    k = np.asarray(k, float)
    return k / k.sum(-1, keepdims=True)


# ------------------------------------------------------------------ the evaluator's numbers


def _scoring_evaluator(hmm: HMM, prepared: PreparedKernels, labels, grid):
    return make_evaluator(hmm, prepared, labels, tuple(int(n) for n in grid), SCORING_DTYPE, forward=SCORING_FORWARD)


def evaluate(hmm: HMM, prepared: PreparedKernels, pr: Prompts, labels, grid, chunk: int = EVAL_CHUNK) -> Evaluation:
    """Bayes, the Oracle and every kernel's ŷ_n on the prompts at the grid points (the simulator's
    evaluator in float64; prompt axis first)."""
    with jax.enable_x64(True):
        return evaluate_prompts(_scoring_evaluator(hmm, prepared, labels, grid), pr.demos_x, pr.demos_y,
                                pr.x_test, pr.task, chunk)


def kernel_weights(hmm: HMM, prepared: PreparedKernels, pr: Prompts, labels, n: int,
                   chunk: int = EVAL_CHUNK) -> np.ndarray:
    """K(x_test, x_i) for i ≤ n and every prepared kernel, ``[P, k, n]`` float64, from the evaluator.

    Each demonstration is evaluated as a one-demonstration prompt ``x_i y_i δ x_test`` (same task),
    whose :attr:`simulate.evaluator.KernelEstimate.denominator` at n = 1 is Σ_{j≤1} K(x_test, x_j) =
    K(x_test, x_i): the evaluator's own kernel value, without a second implementation of the kernels.
    """
    dx, dy = np.asarray(pr.demos_x)[:, :n], np.asarray(pr.demos_y)[:, :n]
    P, _, length = dx.shape
    with jax.enable_x64(True):
        ev = evaluate_prompts(_scoring_evaluator(hmm, prepared, labels, (1,)), dx.reshape(P * n, 1, length),
                              dy.reshape(P * n, 1), np.repeat(np.asarray(pr.x_test), n, axis=0),
                              np.repeat(np.asarray(pr.task), n), chunk)
    return np.stack([np.asarray(k.denominator, np.float64)[:, 0].reshape(P, n) for k in ev.kernels], axis=1)


# ------------------------------------------------------------------ one seed


class SeedResult(NamedTuple):
    """One seed's arrays (prompt axis first; G grid points, N = max grid, k kernels, L layers, H heads).

    Attributes:
        transformer: ``[P, G, |Y|]`` the model's next-token distribution renormalised over Y.
        bayes: ``[P, G, |Y|]`` exact Bayes (the evaluator's).
        oracle: ``[P, |Y|]`` the Oracle (the evaluator's).
        kernel_yhat: ``[P, k, G, |Y|]`` each kernel's ŷ_n (the evaluator's; NaN at n = 0).
        attention: ``[P, L, H, 3, N]`` the label, delimiter and span reads at n = N.
        kernel_values: ``[P, k, N]`` K(x_test, x_i) (the evaluator's, :func:`kernel_weights`).
        label_idx: ``[P, N]`` each demonstration's label as an index into Y.
        label: ``[P]`` GINC only: the prompt's test label (a symbol; GINC's argmax of the Oracle).
        zero: ``[P, G]`` bool, GINC only: P(prompt_n | p_pre) = 0 (Bayes is NaN there).
        oracle_defined: ``[P]`` bool, GINC only: x_test is possible under the prompt law's concept
            and start (the Oracle is NaN where it is not).
    """

    transformer: np.ndarray
    bayes: np.ndarray
    oracle: np.ndarray
    kernel_yhat: np.ndarray
    attention: np.ndarray
    kernel_values: np.ndarray
    label_idx: np.ndarray
    label: np.ndarray | None = None
    zero: np.ndarray | None = None
    oracle_defined: np.ndarray | None = None

    def arrays(self) -> dict:
        """The fields that are set (what ``cells/seed_S.npz`` holds)."""
        return {k: v for k, v in self._asdict().items() if v is not None}


def transformer_reads(model, pr: Prompts, labels, grid, delim: int, bos: int, chunk: int):
    """The model on the prompts: its label distribution ``[P, G, |Y|]`` and the attention reads at
    n = max(grid) ``[P, L, H, 3, N]``."""
    labels = np.asarray(labels, np.int32)
    N = max(grid)
    length = pr.demos_x.shape[-1]
    P = pr.x_test.shape[0]
    trans = np.zeros((P, len(grid), len(labels)))
    att = None
    for g, n in enumerate(grid):
        ids = model_inputs(pr, n, delim, bos)
        pos = demo_positions(n, length)
        for a in range(0, P, chunk):
            out = forward(model, ids[a:a + chunk], capture_positions=np.full((min(chunk, P - a), 1), pos.query))
            logits = np.asarray(out.logits[:, 0], np.float64)
            p = np.exp(logits - logits.max(-1, keepdims=True))
            py = p[:, labels]
            trans[a:a + chunk, g] = py / py.sum(-1, keepdims=True)
            if n == N:
                rows = np.asarray(out.hook_pattern[:, :, :, 0]).transpose(1, 0, 2, 3)     # [B, L, H, S]
                reads = attention_reads(rows, pos)
                if att is None:
                    att = np.zeros((P,) + reads.shape[1:])
                att[a:a + chunk] = reads
    return trans, att


def run_seed(model, hmm: HMM, prepared: PreparedKernels, pr: Prompts, labels, grid, bos: int, chunk: int) -> SeedResult:
    """The transformer and the evaluator on one seed's prompts."""
    labels = np.asarray(labels, np.int32)
    N = max(grid)
    ev = evaluate(hmm, prepared, pr, labels, grid)
    Kv = kernel_weights(hmm, prepared, pr, labels, N)
    label_idx = np.argmax(np.asarray(pr.demos_y)[:, :N, None] == labels, axis=-1)
    trans, att = transformer_reads(model, pr, labels, grid, int(hmm.delim), bos, chunk)
    # The evaluator estimates the kernels at n >= 1 only; n = 0 (no demonstrations) stays NaN.
    kcols = [g for g, n in enumerate(grid) if n > 0]
    yhat = np.full((trans.shape[0], len(ev.kernels), len(grid), len(labels)), np.nan)
    yhat[:, :, kcols] = np.stack([np.asarray(k.yhat, np.float64) for k in ev.kernels], axis=1)
    return SeedResult(trans, np.asarray(ev.bayes, np.float64), np.asarray(ev.oracle, np.float64), yhat, att, Kv,
                      label_idx)


# ------------------------------------------------------------------ GINC prompts


class GincScoring(NamedTuple):
    """What scoring a GINC sweep's prompts needs.

    Attributes:
        sweep_config: the sweep's identity, read from its ``config.json`` (its evaluator is rebuilt from it
            by :func:`simulate.sweep.make_run_evaluator`).
        law: ``"id"`` or ``"ood"`` (GINC's ``ID_sample`` / ``OOD_sample``).
        params: the :class:`simulate.ginc.GincParams` the prompts were drawn from (ID or OOD concepts).
        skipped: sweep grid points whose prompts do not fit the model's context.
    """

    sweep_config: SweepIdentity
    law: str
    params: object
    skipped: tuple


def prompt_positions(n: int, length: int) -> int:
    """Positions a model reads for ``BOS x_1 y_1 δ … x_n y_n δ x_test`` with inputs of ``length`` tokens
    (GINC: ``1 + n(k+1) + k-1`` with k = length + 1)."""
    return 1 + n * (length + 2) + length


def ginc_oracle(params, pr: Prompts, start_slot, law: str):
    """GINC's Oracle under the prompt law, recomputed as the sweep drew it (:func:`simulate.ginc.oracle`
    from GINC's start: uniform over values at the prompt's start slot for ID, uniform over all states for
    OOD): ``(probs [P, A] NaN where undefined, label [P], defined [P] bool)``."""
    from simulate import ginc

    x_test = np.asarray(pr.x_test)
    with jax.enable_x64(True):
        start = ginc.start_id(params, np.asarray(start_slot)) if law == "id" else ginc.start_ood(params, x_test.shape[0])
        orc = ginc.oracle(params, x_test, np.asarray(pr.task), start)
    defined = np.asarray(orc.defined, bool)
    return np.where(defined[:, None], np.asarray(orc.probs, np.float64), np.nan), np.asarray(orc.label), defined


def ginc_evaluator(hmm: HMM, prepared: PreparedKernels, sweep_config: SweepIdentity, grid):
    """The sweep's own GINC evaluator (:func:`simulate.sweep.make_run_evaluator`: exact Bayes under p_pre by
    its forward, the kernels over all symbols) at ``grid``, in float64: ``(demos_x, demos_y, x_test, task,
    oracle) -> Evaluation``. Call it with JAX's float64 enabled."""
    return make_run_evaluator(hmm, prepared, sweep_config.replace(grid=tuple(int(n) for n in grid), curve=False,
                                                                  dtype=SCORING_DTYPE))


def run_ginc_evaluator(evaluate, demos_x, demos_y, x_test, task, oracle, chunk: int = EVAL_CHUNK) -> Evaluation:
    """``evaluate`` (:func:`ginc_evaluator`) over all prompts in batches of ``chunk`` (the last one padded
    with copies of its first prompt and cut, as the sweep does); numpy out, prompt axis first."""
    arrays = [np.asarray(a) for a in (demos_x, demos_y, x_test, task, oracle)]
    P = arrays[0].shape[0]
    c = max(1, min(int(chunk), P))
    pieces = []
    for a in range(0, P, c):
        real = min(c, P - a)
        sl = [x[a:a + c] for x in arrays]
        if real < c:
            sl = [np.concatenate([x, np.repeat(x[:1], c - real, axis=0)]) for x in sl]
        ev = evaluate(*sl)
        pieces.append(jax.tree_util.tree_map(lambda v: np.asarray(v)[:real], ev))
    return jax.tree_util.tree_map(lambda *vs: np.concatenate(vs, axis=0), *pieces)


def ginc_kernel_weights(hmm: HMM, prepared: PreparedKernels, sweep_config: SweepIdentity, pr: Prompts, task, n: int,
                        chunk: int = EVAL_CHUNK) -> np.ndarray:
    """K(x_test, x_i) for i ≤ n and every prepared kernel on GINC prompts, ``[P, k, n]`` float64: each
    demonstration evaluated as a one-demonstration prompt by the sweep's GINC evaluator, whose n = 1
    denominator is K(x_test, x_i) (as :func:`kernel_weights`; a demonstration p_pre cannot produce
    weighs 0 there, as in the sweep)."""
    dx, dy = np.asarray(pr.demos_x)[:, :n], np.asarray(pr.demos_y)[:, :n]
    P, _, length = dx.shape
    A = hmm.num_tokens
    with jax.enable_x64(True):
        ev = run_ginc_evaluator(ginc_evaluator(hmm, prepared, sweep_config, (1,)), dx.reshape(P * n, 1, length),
                                dy.reshape(P * n, 1), np.repeat(np.asarray(pr.x_test), n, axis=0),
                                np.repeat(np.asarray(task), n), np.zeros((P * n, A)), chunk)
    return np.stack([np.asarray(k.denominator, np.float64)[:, 0].reshape(P, n) for k in ev.kernels], axis=1)


def run_seed_ginc(model, hmm: HMM, prepared: PreparedKernels, scoring: GincScoring, pr: Prompts, start_slot,
                  grid, bos: int, chunk: int, what: str = "the sweep") -> SeedResult:
    """The transformer and the sweep's GINC evaluator on one seed's GINC prompts at ``grid`` (the grid
    points that fit the model's context). The Oracle is recomputed from the prompt law and must give the
    sweep's saved test labels."""
    labels = np.asarray(scoring.sweep_config.labels, np.int32)
    N = max(grid)
    oracle, label, defined = ginc_oracle(scoring.params, pr, start_slot, scoring.law)
    if not np.array_equal(label, np.asarray(pr.y_test)):
        i = int(np.argmax(label != np.asarray(pr.y_test)))
        raise TransformerCheckError(f"{what}: prompt {i}'s saved test label {int(pr.y_test[i])} is not the Oracle's "
                                    f"{int(label[i])} recomputed from the sweep's GINC parameters; expected an "
                                    "unmodified GINC sweep folder")
    task = np.asarray(pr.task, np.int32) if scoring.law == "id" else np.full(len(label), -1, np.int32)
    dx, dy = np.asarray(pr.demos_x)[:, :N], np.asarray(pr.demos_y)[:, :N]
    with jax.enable_x64(True):
        ev = run_ginc_evaluator(ginc_evaluator(hmm, prepared, scoring.sweep_config, grid), dx, dy, pr.x_test, task,
                                oracle)
    Kv = ginc_kernel_weights(hmm, prepared, scoring.sweep_config, pr, task, N)
    zero = np.asarray(ev.zero, bool)
    bayes = np.asarray(ev.bayes, np.float64)
    bad = ~np.isfinite(bayes).all(-1) & ~zero
    if bad.any():
        i, g = (int(v) for v in np.argwhere(bad)[0])
        raise TransformerCheckError(f"{what}: Bayes is not finite for prompt {i} at n = {grid[g]} although the prompt "
                                    "has positive probability under p_pre; expected a finite exact Bayes")
    label_idx = np.argmax(dy[..., None] == labels, axis=-1)
    trans, att = transformer_reads(model, pr, labels, grid, int(hmm.delim), bos, chunk)
    kcols = [g for g, n in enumerate(grid) if n > 0]
    yhat = np.full((trans.shape[0], len(ev.kernels), len(grid), len(labels)), np.nan)
    yhat[:, :, kcols] = np.stack([np.asarray(k.yhat, np.float64) for k in ev.kernels], axis=1)
    res = SeedResult(trans, bayes, oracle, yhat, att, Kv, label_idx, label=np.asarray(pr.y_test, np.int32),
                     zero=zero, oracle_defined=defined)
    # C order, as the arrays come back from cells/seed_S.npz: a resumed run sums in the same order
    return SeedResult(*(np.ascontiguousarray(x) for x in res))


def label_accuracy(pred, label, labels) -> np.ndarray:
    """1.0 where the argmax of ``pred [P, ..., |Y|]`` over Y is the prompt's ``label [P]`` (a token of
    ``labels``), 0.0 where not, NaN where ``pred`` is not finite (GINC's metric, as the sweep scores it)."""
    pred = np.asarray(pred, float)
    idx = np.argmax(np.asarray(label)[:, None] == np.asarray(labels)[None, :], axis=1)
    idx = np.where((np.asarray(label)[:, None] == np.asarray(labels)[None, :]).any(1), idx, -1)
    idx = idx.reshape(idx.shape + (1,) * (pred.ndim - 2))
    ok = np.isfinite(pred).all(-1)
    return np.where(ok, (np.argmax(np.nan_to_num(pred, nan=-np.inf), -1) == idx).astype(float), np.nan)


def ginc_curve_metrics(res: SeedResult, kernel_labels, labels) -> list[dict]:
    """:func:`curve_metrics` plus, per method and n, the accuracy against the prompt's label, an
    ``oracle`` row, and for every metric the number of prompts its mean is over (``count_<metric>``;
    Bayes and distances to it exist only on prompts with P(prompt | p_pre) > 0, the Oracle only where
    x_test is possible under the prompt law)."""
    rows = curve_metrics(res, kernel_labels)
    G = res.bayes.shape[1]
    oracle_g = np.broadcast_to(res.oracle[:, None], res.bayes.shape)
    orow = dict(method="oracle", **{k: metrics.column_means(v) for k, v in
                                    metrics.predictor_metrics(oracle_g, res.bayes, res.oracle).items()})
    rows.append(orow)
    preds = dict(transformer=res.transformer, bayes=res.bayes, oracle=oracle_g,
                 **{f"kernel:{k}": res.kernel_yhat[:, j] for j, k in enumerate(kernel_labels)})
    for row in rows:
        pred = preds[row["method"]]
        per = metrics.predictor_metrics(pred, res.bayes, res.oracle)
        per["accuracy"] = label_accuracy(pred, res.label, labels)
        row["accuracy"] = metrics.column_means(per["accuracy"])
        for k, v in per.items():
            row[f"count_{k}"] = np.isfinite(v).sum(0).astype(int).reshape(G)
    return rows


# ------------------------------------------------------------------ summary


def curve_metrics(res: SeedResult, kernel_labels) -> list[dict]:
    """Per method and n, the mean over prompts (non-finite left out) of :func:`simulate.metrics.predictor_metrics`:
    L1 to Bayes, L1 to Oracle, accuracy vs Oracle, agreement with Bayes."""
    methods = [("transformer", res.transformer)] + [(f"kernel:{k}", res.kernel_yhat[:, j])
                                                     for j, k in enumerate(kernel_labels)]
    methods.append(("bayes", res.bayes))
    return [dict(method=name, **{k: metrics.column_means(v)
                                 for k, v in metrics.predictor_metrics(pred, res.bayes, res.oracle).items()})
            for name, pred in methods]


def position_controls(a, w, label_idx, targets: dict, sel, rep, num_labels: int, kernel_labels,
                      n_perm: int = 200, seed: int = 0) -> dict:
    """The position-aware analysis of one read, with the real-data check's baselines
    (:func:`llm_check.realdata.analysis.position_baselines`, :func:`~llm_check.realdata.analysis.score_baselines`).

    ``a [P, L, H, N]`` attention per demonstration, ``w [P, k, N]`` normalised kernel weights,
    ``label_idx [P, N]``, ``targets`` name → ``[P]`` class index (the first one chooses the head),
    ``sel`` / ``rep`` the selection and held-out prompts. The head whose vote (reconstruction rule
    ``argmax``) agrees most with the first target on ``sel`` is scored on ``rep`` beside the last
    demonstration's label, its position-only vote (profile from ``sel``), the majority label and a
    constant (the most frequent target class on ``sel``); it is kernel-like only if it agrees more
    often than its position-only vote with exact McNemar p < 0.05. For every kernel and head, the
    pooled (prompt, demonstration) correlation of attention with the kernel's weights on ``rep``
    before and after removing position, with the within-position permutation p-value (``n_perm`` shuffles).

    A target entry of -1 is undefined on that prompt (Bayes on a GINC prompt of probability 0): the
    prompt is left out of that target's numbers and ``prompts`` counts the held-out prompts used. A
    prompt whose kernel weights are not finite (every K(x_test, x_i) = 0) is left out of that kernel's
    correlations likewise.
    """
    a = np.asarray(a, np.float64)
    pb = ra.position_baselines(a, label_idx, num_labels, sel)
    first = next(iter(targets.values()))
    choice = ra.select_head(ra.head_accuracy(pb.recon[sel], np.asarray(first)[sel]))
    l, h = choice.layer, choice.head
    against = {}
    for name, t in targets.items():
        t = np.asarray(t)
        sel_t, rep_t = sel[t[sel] >= 0], rep[t[rep] >= 0]         # a target of -1 is undefined there
        if not sel_t.size or not rep_t.size:
            against[name] = dict(prompts=int(rep_t.size), kernel_like=False,
                                 verdict="no held-out prompt where this target is defined")
            continue
        const = ra.most_frequent(t[sel_t], num_labels)
        sc = ra.score_baselines(pb, t, rep_t, l, h, const)
        hv = sc.head
        verdict = (f"kernel-like: its vote beats its position-only vote ({hv.head_agreement:.3f} vs "
                   f"{hv.position_agreement:.3f}, McNemar p = {hv.p_value:.3g} < 0.05)" if hv.kernel_like else
                   f"not kernel-like: its vote does not beat its position-only vote with p < 0.05 "
                   f"({hv.head_agreement:.3f} vs {hv.position_agreement:.3f}, McNemar p = {hv.p_value:.3g})")
        against[name] = dict(
            prompts=int(rep_t.size), head_agreement=hv.head_agreement, position_vote_agreement=hv.position_agreement,
            last_label_agreement=sc.versus["last_label"].agreement,
            majority_agreement=sc.versus["majority_vote"].agreement,
            constant=const, constant_agreement=sc.versus["constant"].agreement, constant_fitted_on="selection",
            only_head_agrees=hv.only_head, only_position_agrees=hv.only_position, mcnemar_p=hv.p_value,
            kernel_like=hv.kernel_like, verdict=verdict,
            head_vs_baselines={k: dict(agreement=v.agreement, only_head_agrees=v.only_head,
                                       only_baseline_agrees=v.only_baseline, mcnemar_p=v.p_value)
                               for k, v in sc.versus.items()},
            map_head_agreement=sc.head_agreement.tolist(),
            map_position_vote_agreement=sc.position_vote_agreement.tolist(),
            kernel_like_heads=int(sc.kernel_like.sum()),
            kernel_like_heads_at=[[int(i), int(j)] for i, j in np.argwhere(sc.kernel_like)])
    corr = {}
    for j, kname in enumerate(kernel_labels):
        wj = np.asarray(w)[rep, j]
        ok = np.isfinite(wj).all(-1)                     # GINC: no weight where every K(x_test, x_i) is 0
        if not ok.any():
            nan = np.full(a.shape[1:3], np.nan)
            corr[kname] = dict(prompts=0, r_raw=float("nan"), r_within=float("nan"), p_within=float("nan"),
                               map_r_raw=nan.tolist(), map_r_within=nan.tolist(), map_p_within=nan.tolist())
            continue
        pc = ra.position_controlled_corr(a[rep][ok], wj[ok], n_perm=n_perm, seed=seed)
        corr[kname] = dict(prompts=int(ok.sum()), r_raw=float(pc.r_raw[l, h]), r_within=float(pc.r_within[l, h]),
                           p_within=float(pc.p_within[l, h]), map_r_raw=pc.r_raw.tolist(),
                           map_r_within=pc.r_within.tolist(), map_p_within=pc.p_within.tolist())
    return dict(head=[l, h], select_agreement=choice.select_agreement, selected_on=next(iter(targets)),
                reconstruction_rule="argmax", position_profile=pb.profile[l, h].tolist(),
                map_position_profile=pb.profile.tolist(), against=against, kernels=corr)


def defined_argmax(p) -> np.ndarray:
    """``argmax`` over the last axis, -1 where the row is not finite (Bayes on a prompt of probability 0)."""
    p = np.asarray(p, float)
    return np.where(np.isfinite(p).all(-1), np.argmax(np.nan_to_num(p, nan=-np.inf), -1), -1)


def head_analysis(res: SeedResult, kernel_labels, num_labels: int, seed: int, n_perm: int = 200) -> dict:
    """Per kernel and read: head maps, the head selected on even prompts, held-out (odd) numbers, baselines,
    and the position controls of :func:`position_controls` (``heads["position"][read]``)."""
    P, L, H, _, N = res.attention.shape
    sel, rep = np.arange(0, P, 2), np.arange(1, P, 2)
    rng = np.random.default_rng(seed)
    rand_head = (int(rng.integers(L)), int(rng.integers(H)))
    trans_N, bayes_N = res.transformer[:, -1], res.bayes[:, -1]
    uniform = np.full((P, N), 1.0 / N)
    perm = np.argsort(rng.random((P, N)), axis=-1)
    out = dict(layers=L, heads=H, n=N, select_prompts=int(sel.size), report_prompts=int(rep.size),
               random_head=list(rand_head), kernels={}, reconstruction={}, position={})
    w_all = normalised(res.kernel_values)                           # [P, k, N]
    targets = dict(transformer=np.argmax(trans_N, -1), bayes=defined_argmax(bayes_N))
    if res.label is not None:                                      # GINC: also the prompt's test label
        lab = np.asarray(res.label)[:, None] == np.arange(num_labels)[None, :]
        targets["label"] = np.where(lab.any(1), np.argmax(lab, 1), -1)
    u_rec = ra.reconstruct(uniform, res.label_idx, num_labels, "soft")
    for r, read in enumerate(READS):
        a = res.attention[:, :, :, r]                               # [P, L, H, N]
        pos = position_controls(a, w_all, res.label_idx, targets, sel, rep, num_labels, kernel_labels,
                                n_perm=n_perm, seed=seed)
        out["position"][read] = pos
        y_rec = ra.reconstruct(a, res.label_idx, num_labels, "soft")   # [P, L, H, Y]
        to_t = metrics.l1(y_rec, trans_N[:, None, None])
        to_b = metrics.l1(y_rec, bayes_N[:, None, None])
        best = np.unravel_index(np.argmin(metrics.column_means(to_t[sel])), (L, H))
        out["reconstruction"][read] = dict(
            rule="soft",
            head=[int(best[0]), int(best[1])],
            l1_to_transformer=metrics.finite_mean(to_t[rep][:, best[0], best[1]]),
            l1_to_bayes=metrics.finite_mean(to_b[rep][:, best[0], best[1]]),
            uniform_l1_to_transformer=metrics.finite_mean(metrics.l1(u_rec, trans_N)[rep]),
            uniform_l1_to_bayes=metrics.finite_mean(metrics.l1(u_rec, bayes_N)[rep]),
            random_head_l1_to_transformer=metrics.finite_mean(to_t[rep][:, rand_head[0], rand_head[1]]),
            map_l1_to_transformer=metrics.column_means(to_t).tolist())
        for j, kname in enumerate(kernel_labels):
            w = w_all[:, j]                                         # [P, N]
            c = compare_weights(a, w[:, None, None])               # each [P, L, H]
            pear_sel = metrics.column_means(c["pearson"][sel])
            if np.all(np.isnan(pear_sel)):
                continue
            h = np.unravel_index(np.nanargmax(pear_sel), (L, H))
            a_h = a[:, h[0], h[1]]
            shuf = compare_weights(a_h, np.take_along_axis(w, perm, -1))
            rnd = {k: v[:, rand_head[0], rand_head[1]] for k, v in c.items()}
            uni = compare_weights(uniform, w)
            out["kernels"].setdefault(kname, {})[read] = dict(
                head=[int(h[0]), int(h[1])],
                map_pearson=metrics.column_means(c["pearson"]).tolist(),
                **{f"{m}": metrics.finite_mean(c[m][rep][:, h[0], h[1]]) for m in ("pearson", "spearman", "l1")},
                **{f"shuffled_{m}": metrics.finite_mean(shuf[m][rep]) for m in ("pearson", "spearman", "l1")},
                **{f"random_head_{m}": metrics.finite_mean(rnd[m][rep]) for m in ("pearson", "spearman", "l1")},
                uniform_l1=metrics.finite_mean(uni["l1"][rep]),
                kernel_yhat_l1_to_transformer=metrics.finite_mean(metrics.l1(res.kernel_yhat[rep, j, -1], trans_N[rep])),
                **{f"position_{m}": float(np.asarray(pos["kernels"][kname][f"map_{m}"])[h[0], h[1]])
                   for m in ("r_raw", "r_within", "p_within")})
    return out


def concat(results: list[SeedResult]) -> SeedResult:
    return SeedResult(*[None if x[0] is None else np.concatenate(x, axis=0) for x in zip(*results)])


# ------------------------------------------------------------------ the run


def _sha(rf: RunFolder, rel: str) -> str:
    return hashlib.sha256(rf.read_bytes(rel)).hexdigest()


@dataclass(frozen=True)
class CheckIdentity:
    """What a transformer-check run is (its ``config.json``): both folders with their hashes and
    everything read from them that the numbers depend on."""

    model_run: str
    model_state_sha256: str
    sweep_run: str
    sweep_config_sha256: str
    kernels: tuple
    seeds: tuple
    grid: tuple
    length: int
    labels: tuple
    seed: int
    same_hmm: bool
    bos: int
    ginc: dict | None = None          # GINC sweeps only: prompt law, k, the sweep's grid, skipped n, context

    def to_dict(self) -> dict:
        """JSON form (tuples as lists; ``ginc`` only for GINC sweeps, so matched-law configs are unchanged)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()
                if not (k == "ginc" and v is None)}


class ResolvedCheck(NamedTuple):
    """Both run folders opened and checked: the run's identity, the model, the sweep's HMM, its
    prepared kernels and its run folder (read-only)."""

    identity: CheckIdentity
    model: object
    hmm: HMM
    prepared: PreparedKernels
    sweep: RunFolder
    ginc: GincScoring | None = None


#: Two HMMs are the same p_pre when their arrays have the same shapes and differ by at most this
#: (a ``--preset ginc`` model and a sweep of the same parameters, or a ``--preset custom`` file of them).
HMM_ATOL = 1e-12


def hmm_difference(a: HMM, b: HMM) -> float:
    """The largest absolute difference between two HMMs' arrays (inf if any shape differs)."""
    diff = 0.0
    for x, y in zip(a, b):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            diff = max(diff, float(np.max(np.abs(x - y))))
    return diff


def resolve(cfg: CheckConfig) -> ResolvedCheck:
    """Open and check both run folders (nothing is written)."""
    m_rf = open_existing(cfg.model_run, train.COMMAND)
    model, m_cfg, train_hmm = train.load_trained(cfg.model_run)
    s_rf = open_existing(cfg.sweep_run, "sweep")
    s_cfg = SweepIdentity.from_dict(s_rf.read_json("config.json"))
    law = s_cfg.law
    if law not in ("matched", "ginc-id", "ginc-ood"):
        raise TransformerCheckError(f"sweep {cfg.sweep_run} draws its prompts by the {law!r} law; expected a sweep "
                                    "with the matched, ginc-id or ginc-ood prompt law")
    ginc_law = law.startswith("ginc")
    hmm = load_run_hmm(s_rf)
    bos = int(m_cfg.bos)
    vocab = model.config.vocab_size
    if hmm.num_tokens > bos:
        raise TransformerCheckError(f"sweep {cfg.sweep_run} uses tokens 0..{hmm.num_tokens - 1} but model {cfg.model_run} "
                                    f"was trained on tokens 0..{bos - 1} (vocabulary {vocab} with BOS); expected a sweep "
                                    "of the model's pretraining distribution")
    grid = [int(n) for n in s_cfg.grid]
    if max(grid) < 1:
        raise TransformerCheckError(f"sweep {cfg.sweep_run} has grid {grid}; expected some n >= 1 (the attention "
                                    "reads need demonstrations)")
    length = int(s_cfg.length)
    ctx = int(model.config.n_positions)
    skipped = []
    if ginc_law:  # GINC's grid runs to long prompts: score the n that fit the context, say which do not
        fits = [n for n in grid if prompt_positions(n, length) <= ctx]
        skipped = [n for n in grid if n not in fits]
        if not any(n >= 1 for n in fits):
            raise TransformerCheckError(
                f"no grid point n >= 1 of sweep {cfg.sweep_run} fits model {cfg.model_run}'s context of {ctx} "
                f"positions: n = 1 needs 1 + n(k+1) + k-1 = {prompt_positions(1, length)} (k = {length + 1}); "
                "expected a sweep with smaller k or a model with a longer --context")
        grid = fits
    need = 1 + max(grid) * (length + 2) + length
    if need > model.config.n_positions:
        raise TransformerCheckError(f"the sweep's largest prompt (n={max(grid)}, l={length}) needs {need} positions but "
                                    f"the model's context is {model.config.n_positions}; expected a sweep with "
                                    f"n*(l+2)+l+1 <= {model.config.n_positions}")
    saved = [s for s in s_cfg.seeds if s_rf.exists(f"prompts/seed_{s}.npz")]
    seeds = list(cfg.seeds) if cfg.seeds else saved
    missing = [s for s in seeds if s not in saved]
    if missing or not seeds:
        raise TransformerCheckError(f"sweep {cfg.sweep_run} has no saved prompts for seed(s) {missing or seeds}; "
                                    f"expected some of {saved}")
    kernels = list(cfg.kernels) if cfg.kernels else list(s_cfg.kernels)
    specs = [tk.parse_kernel(k) for k in kernels]
    if law == "ginc-ood" and any(k.name == "task" for k in specs):
        raise TransformerCheckError("kernel 'task' with the sweep's prompt law 'ginc-ood': an OOD concept is not a "
                                    "task of p_pre, so it has no Σ_θ; expected kernels without 'task'")
    if not isinstance(cfg.chunk, int) or cfg.chunk < 1:
        raise TransformerCheckError(f"chunk {cfg.chunk!r}, expected an integer >= 1")
    with jax.enable_x64(True):
        prepared = prepare_kernels(hmm, specs, length)
    diff = hmm_difference(hmm, train_hmm)
    same_hmm = diff <= HMM_ATOL
    scoring, ginc_id = None, None
    if ginc_law:
        with jax.enable_x64(True):
            id_p, ood_p = run_ginc_params(s_cfg)
        scoring = GincScoring(s_cfg, law.removeprefix("ginc-"), id_p if law == "ginc-id" else ood_p, tuple(skipped))
        ginc_id = dict(prompt_law=law, k=length + 1, sweep_grid=[int(n) for n in s_cfg.grid], skipped_n=skipped,
                       context=ctx, hmm_max_abs_diff=diff if np.isfinite(diff) else None, hmm_atol=HMM_ATOL)
    identity = CheckIdentity(
        model_run=str(Path(cfg.model_run).resolve()), model_state_sha256=_sha(m_rf, "state.npz"),
        sweep_run=str(Path(cfg.sweep_run).resolve()), sweep_config_sha256=_sha(s_rf, "config.json"),
        kernels=tuple(s.label for s in specs), seeds=tuple(int(s) for s in seeds), grid=tuple(grid), length=length,
        labels=tuple(int(y) for y in s_cfg.labels), seed=int(cfg.seed), same_hmm=bool(same_hmm), bos=bos,
        ginc=ginc_id)
    return ResolvedCheck(identity, model, hmm, prepared, s_rf, scoring)


CURVE_COLUMNS = ("l1_bayes", "l1_oracle", "acc_oracle", "agree_bayes")
GINC_CURVE_COLUMNS = CURVE_COLUMNS + ("accuracy",)


def write_metrics_csv(rf: RunFolder, curves: list[dict], grid) -> None:
    """``metrics.csv``: one row per method and n (GINC: also the accuracy against the prompt's label and
    the number of prompts behind every mean; a mean over no prompt is an empty field)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    if not any("accuracy" in row for row in curves):
        w.writerow(["method", "n", *CURVE_COLUMNS])
        for row in curves:
            for g, n in enumerate(grid):
                w.writerow([row["method"], n] + [f"{row[k][g]:.6g}" for k in CURVE_COLUMNS])
    else:
        w.writerow(["method", "n", *GINC_CURVE_COLUMNS, *(f"count_{k}" for k in GINC_CURVE_COLUMNS)])
        for row in curves:
            for g, n in enumerate(grid):
                w.writerow([row["method"], n] + [f"{row[k][g]:.6g}" if np.isfinite(row[k][g]) else ""
                                                  for k in GINC_CURVE_COLUMNS]
                           + [int(row[f"count_{k}"][g]) for k in GINC_CURVE_COLUMNS])
    rf.write_text("metrics.csv", buf.getvalue())


def skipped_note(ginc: dict) -> str | None:
    """One line naming the GINC grid points left out because their prompts exceed the model's context."""
    sk = ginc.get("skipped_n") or []
    if not sk:
        return None
    k = ginc["k"]
    return (f"note: n = {', '.join(map(str, sk))} skipped: their prompts need 1 + n(k+1) + k-1 = "
            f"{', '.join(str(prompt_positions(n, k - 1)) for n in sk)} positions (k = {k}), more than the model's "
            f"context of {ginc['context']} (GINC itself skips prompts over 1024 tokens)")


def run_transformer_check(cfg: CheckConfig, out_dir, *, overwrite: bool = False, quiet: bool = False,
                          log=print) -> dict:
    """Run (or resume) a transformer-check into ``out_dir``; the summary (``summary.json``)."""
    rc = resolve(cfg)
    ident = rc.identity
    if not ident.same_hmm:
        log("warning: the sweep's HMM is not the model's pretraining HMM; Bayes refers to the sweep's HMM")
    grid, labels = list(ident.grid), list(ident.labels)
    config = ident.to_dict()
    with RunFolder.create(Path(out_dir), command=COMMAND, config=config, overwrite=overwrite, log=log) as rf:
        results = []
        for s in tqdm(ident.seeds, desc="transformer-check", disable=quiet, unit="seed"):
            rel = f"cells/seed_{s}.npz"
            if rf.is_done(rel):
                results.append(SeedResult(**rf.load_npz(rel)))
                continue
            pr = load_prompts(rc.sweep, s)
            if rc.ginc is None:
                res = run_seed(rc.model, rc.hmm, rc.prepared, pr, labels, grid, ident.bos, cfg.chunk)
            else:
                extra = rc.sweep.load_npz(f"prompts/seed_{s}.npz")
                if "start_slot" not in extra:
                    raise TransformerCheckError(f"{rc.sweep.path / f'prompts/seed_{s}.npz'} lacks start_slot; expected "
                                                "the prompts of a GINC sweep")
                res = run_seed_ginc(rc.model, rc.hmm, rc.prepared, rc.ginc, pr, extra["start_slot"], grid, ident.bos,
                                    cfg.chunk, what=f"sweep {ident.sweep_run} seed {s}")
            rf.savez(rel, **res.arrays())
            results.append(res)
        res = concat(results)
        kl = list(ident.kernels)
        curves = curve_metrics(res, kl) if rc.ginc is None else ginc_curve_metrics(res, kl, labels)
        heads = head_analysis(res, kl, len(labels), ident.seed)
        write_metrics_csv(rf, curves, grid)
        summary = dict(config=config, num_prompts=int(res.transformer.shape[0]),
                       curves={r["method"]: {k: np.asarray(v).tolist() for k, v in r.items() if k != "method"}
                               for r in curves},
                       posterior_note="bayes row: l1_bayes is 0 by definition; l1_oracle is the Bayes-vs-Oracle line",
                       heads=heads)
        if rc.ginc is not None:
            summary["ginc"] = dict(
                ident.ginc, note=skipped_note(ident.ginc),
                zero_probability=res.zero.mean(0).tolist(), zero_count=res.zero.sum(0).astype(int).tolist(),
                oracle_defined=float(res.oracle_defined.mean()), oracle_defined_count=int(res.oracle_defined.sum()),
                scoring=("transformer: its next-symbol distribution at the last x_test token over all symbols "
                         "(BOS left out); accuracy = argmax equals the prompt's label (GINC's metric); Bayes, L1 "
                         "to Bayes and agreement with Bayes only on prompts of positive probability under p_pre "
                         "(count_* per n; zero_probability the fraction left out); the Oracle (GINC's score under "
                         "the prompt law) only where x_test is possible under it"))
        rf.write_json("summary.json", summary)
        with rf.atomic_path("error_vs_n.png") as tmp:
            plots.error_vs_n(summary, tmp)
        with rf.atomic_path("head_map.png") as tmp:
            plots.head_map(summary, tmp)
        with rf.atomic_path("attention_scatter.png") as tmp:
            plots.scatter(summary, res, tmp)
        with rf.atomic_path("position_map.png") as tmp:
            plots.position_map(summary, tmp)
    return summary


def _g(v) -> str:
    return "     —" if v is None or not np.isfinite(v) else f"{v:6.3f}"


def format_ginc_curves(summary: dict) -> list[str]:
    """The curve lines of :func:`format_table` for a GINC sweep: the zero-probability fraction, accuracy
    against the prompt's label, L1 to Bayes and to the Oracle, per method and n (— where no prompt counts)."""
    cfg, gi, c = summary["config"], summary["ginc"], summary["curves"]
    grid = cfg["grid"]
    lines = [f"prompts: {summary['num_prompts']}  n: {grid}  prompt law: {gi['prompt_law']} (k = {gi['k']})  "
             f"labels: all {len(cfg['labels'])} symbols  scored by: exact Bayes under p_pre"]
    if gi.get("note"):
        lines.append(gi["note"])
    if not cfg.get("same_hmm", True):
        lines.append("warning: the model was not pretrained on the sweep's p_pre (HMM arrays differ by "
                     f"{gi.get('hmm_max_abs_diff')}); Bayes is the sweep's")
    lines.append(f"Oracle defined (x_test possible under the prompt law) on {gi['oracle_defined_count']} of "
                 f"{summary['num_prompts']} prompts")
    lines.append(f"{'n':32s}" + " ".join(f"{n:>6d}" for n in grid))
    lines.append(f"{'P(prompt | p_pre) = 0 fraction':32s}" + " ".join(_g(v) for v in gi["zero_probability"]))
    names = ["transformer", "bayes", "oracle"] + [m for m in c if m.startswith("kernel:")]
    title = dict(transformer="transformer", bayes="Bayes (P>0 prompts)", oracle="Oracle")
    for metric, head, skip in (("accuracy", "accuracy (argmax = the prompt's label)", ()),
                               ("l1_bayes", "L1 to Bayes (P>0 prompts)", ("bayes",)),
                               ("l1_oracle", "L1 to the Oracle", ("oracle",))):
        lines.append(head)
        for m in names:
            if m in skip:
                continue
            lines.append(f"  {title.get(m, m)[:30]:30s}" + " ".join(_g(v) for v in c[m][metric]))
    return lines


def format_table(summary: dict) -> str:
    grid = summary["config"]["grid"]
    c = summary["curves"]
    if "ginc" in summary:
        lines = format_ginc_curves(summary)
        c = {}
    else:
        lines = [f"prompts: {summary['num_prompts']}  n: {grid}",
                 "method                 " + " ".join(f"{n:>6d}" for n in grid)]
    for name, row in c.items():
        if name == "bayes":
            lines.append(f"{'Bayes L1 to Oracle':22s} " + " ".join(f"{v:6.3f}" for v in row["l1_oracle"]))
            continue
        lines.append(f"{name[:22]:22s} L1→Bayes  " + " ".join(f"{v:6.3f}" for v in row["l1_bayes"]))
        lines.append(f"{'':22s} L1→Oracle " + " ".join(f"{v:6.3f}" for v in row["l1_oracle"]))
        lines.append(f"{'':22s} acc Oracle" + " ".join(f"{v:6.3f}" for v in row["acc_oracle"]))
    h = summary["heads"]
    lines.append(f"heads: selected on {h['select_prompts']} prompts, reported on {h['report_prompts']} (n = {h['n']})")
    for kname, reads in h["kernels"].items():
        for read, r in reads.items():
            lines.append(f"  {kname:22s} {read:5s} head L{r['head'][0]}H{r['head'][1]}: pearson {r['pearson']:.3f} "
                         f"spearman {r['spearman']:.3f} L1 {r['l1']:.3f} | shuffled {r['shuffled_pearson']:.3f} "
                         f"random head {r['random_head_pearson']:.3f} uniform L1 {r['uniform_l1']:.3f}")
    for read, r in h["reconstruction"].items():
        lines.append(f"  reconstruction ({r.get('rule', 'soft')}) {read:5s} head L{r['head'][0]}H{r['head'][1]}: L1 to transformer "
                     f"{r['l1_to_transformer']:.3f} (uniform {r['uniform_l1_to_transformer']:.3f}, random head "
                     f"{r['random_head_l1_to_transformer']:.3f}); L1 to Bayes {r['l1_to_bayes']:.3f} "
                     f"(uniform {r['uniform_l1_to_bayes']:.3f})")
    lines += format_position(h)
    return "\n".join(lines)


def _f(v, fmt=".3f"):
    return "nan" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)


def format_position(h: dict) -> list[str]:
    """Lines of the position controls for :func:`format_table`."""
    pos = h.get("position") or {}
    if not pos:
        return []
    lines = [f"position controls (n = {h['n']}): head chosen by the agreement of its vote (reconstruction rule "
             f"{next(iter(pos.values())).get('reconstruction_rule', 'argmax')}) with the transformer on "
             f"{h['select_prompts']} prompts, all numbers on the other {h['report_prompts']}"]
    for read, p in pos.items():
        lines.append(f"  {read:5s} head L{p['head'][0]}H{p['head'][1]} (selection agreement {_f(p['select_agreement'])}); "
                     "mean attention per position (first → last): " + " ".join(_f(v, ".2f") for v in p["position_profile"]))
        for tname, t in p["against"].items():
            if "head_agreement" not in t:
                lines.append(f"    agreement with {tname:11s}: {t['verdict']}")
                continue
            on = f" (on {t['prompts']} prompts)" if t.get("prompts", h["report_prompts"]) != h["report_prompts"] else ""
            lines.append(f"    agreement with {tname:11s}{on}: head {_f(t['head_agreement'])} | position vote "
                         f"{_f(t['position_vote_agreement'])} | last label {_f(t['last_label_agreement'])} | majority "
                         f"{_f(t['majority_agreement'])} | constant {_f(t['constant_agreement'])}; McNemar head-only "
                         f"{t['only_head_agrees']} vote-only {t['only_position_agrees']} p = {_f(t['mcnemar_p'], '.3g')} "
                         f"→ {'kernel-like' if t['kernel_like'] else 'NOT kernel-like'} "
                         f"({t['kernel_like_heads']} of {h['layers'] * h['heads']} heads kernel-like)")
        lines.append("    r with kernel weights at this head, before / within position (p): " + "; ".join(
            f"{k} {_f(c['r_raw'])} / {_f(c['r_within'])} ({_f(c['p_within'], '.3g')})" for k, c in p["kernels"].items()))
    lines.append("  per kernel, at its own Pearson-selected head (span read): r before / within position (p): " + "; ".join(
        f"{k} L{r['span']['head'][0]}H{r['span']['head'][1]} {_f(r['span'].get('position_r_raw'))} / "
        f"{_f(r['span'].get('position_r_within'))} ({_f(r['span'].get('position_p_within'), '.3g')})"
        for k, r in h["kernels"].items() if "span" in r))
    return lines
