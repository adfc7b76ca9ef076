"""Attention-as-kernel analysis: pure numpy functions over captured attention rows.

Shapes: L layers, H heads, S prompt length, n demonstrations, N test points, C classes.
Nothing here touches a model; every function is tested on synthetic arrays.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from theory import kernels as tk
from theory.stats import bootstrap_mean, mcnemar_exact

WEIGHT_MODES = ("max", "at_y", "sum", "mean")
SPAN_MODES = ("xy", "block")


def kernel_weights(rows: np.ndarray, x_spans: np.ndarray, y_spans: np.ndarray, block_spans: np.ndarray | None = None,
                   mode: str = "max", span: str = "xy", drop_sink: bool = False) -> np.ndarray:
    r"""Kernel weight :math:`a_i` of each demonstration for every layer and head.

    Args:
      rows: ``[L, H, S]`` last-token attention rows (one prompt).
      x_spans, y_spans: ``[n, 2]`` half-open token spans of x_i and y_i.
      block_spans: ``[n, 2]`` whole demonstrations (``Input:`` … y_i), used when ``span="block"``.
      mode: ``max`` (the paper: :math:`a_i = \max_{t \in [x_i, y_i]} A_t`), ``at_y`` (attention on
        y_i's first token), ``sum`` or ``mean`` over the span.
      span: ``xy`` = from x_i's first token to y_i's last (template tokens in between included),
        ``block`` = the whole demonstration including its ``Input:`` prefix.
      drop_sink: ignore position 0 (the attention sink) wherever a span covers it.

    Returns ``[L, H, n]``.
    """
    if mode not in WEIGHT_MODES:
        raise ValueError(f"weight mode {mode!r}; expected one of {WEIGHT_MODES}")
    if span not in SPAN_MODES:
        raise ValueError(f"span {span!r}; expected one of {SPAN_MODES}")
    rows = np.asarray(rows, dtype=np.float64)
    if drop_sink:
        rows = rows.copy()
        rows[..., 0] = 0.0
    n = len(x_spans)
    out = np.zeros(rows.shape[:-1] + (n,))
    for i in range(n):
        if mode == "at_y":
            out[..., i] = rows[..., y_spans[i, 0]]
            continue
        a = block_spans[i, 0] if span == "block" else x_spans[i, 0]
        b = y_spans[i, 1]
        seg = rows[..., a:b]
        out[..., i] = seg.max(-1) if mode == "max" else seg.sum(-1) if mode == "sum" else seg.mean(-1)
    return out


RECONSTRUCTION_RULES = ("argmax", "soft")


def reconstruct(weights: np.ndarray, demo_labels: np.ndarray, n_classes: int, rule: str = "argmax") -> np.ndarray:
    r"""The label a head's demonstration weights vote for, by one of two named rules.

    ``soft``: the weighted label distribution :math:`\sum_i a_i e(y_i)` ``[..., C]`` (a distribution
    when the weights sum to 1). ``argmax``: :math:`	ilde y = rg\max_y \sum_i a_i e(y_i)[y]`
    ``[...]`` int, ties to the lower class index (``np.argmax``; all-zero weights give class 0).

    ``weights[..., n]`` with ``demo_labels[n]`` (one prompt; any leading axes, e.g. ``[L, H, n]``), or
    ``weights[N, ..., n]`` with ``demo_labels[N, n]`` (N prompts, each with its own labels). The sum
    over the demonstrations runs in order i = 1..n for both rules.
    """
    if rule not in RECONSTRUCTION_RULES:
        raise ValueError(f"reconstruction rule {rule!r}; expected one of {RECONSTRUCTION_RULES}")
    labels = np.asarray(demo_labels)
    w = np.asarray(weights, np.float64)
    onehot = (labels[..., None] == np.arange(n_classes)).astype(np.float64)       # labels.shape + (C,)
    lead = labels.ndim - 1
    onehot = onehot.reshape(onehot.shape[:lead] + (1,) * (w.ndim - labels.ndim) + onehot.shape[lead:])
    soft = (w[..., None] * onehot).sum(-2)
    return soft if rule == "soft" else np.argmax(soft, axis=-1)


def head_accuracy(recon: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``recon[N, L, H]`` vs ``target[N]`` -> fraction equal per head ``[L, H]``."""
    return (np.asarray(recon) == np.asarray(target)[:, None, None]).mean(0)


class HeadChoice(NamedTuple):
    layer: int
    head: int
    select_agreement: float


def select_head(agreement: np.ndarray) -> HeadChoice:
    """The head with the highest agreement (ỹ vs ŷ) on the selection items; first in (layer, head) order on ties."""
    flat = int(np.argmax(agreement))
    l, h = np.unravel_index(flat, agreement.shape)
    return HeadChoice(int(l), int(h), float(agreement[l, h]))


def selection_split(n_items: int, n_select: int = 700, n_heldout: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Item indices for head selection and held-out evaluation (the paper's 700 / 300).

    With fewer than ``n_select + n_heldout`` items the selection part keeps its share 700/1000 of
    them (SST-2's 872 items: 610 / 262) so the held-out part is never empty.
    """
    if n_items < 2:
        raise ValueError(f"{n_items} test points; expected at least 2 to split into selection and held-out")
    if n_items >= n_select + n_heldout:
        ns, nh = n_select, n_heldout
    else:
        ns = max(1, min(n_items - 1, int(round(n_items * n_select / (n_select + n_heldout)))))
        nh = n_items - ns
    idx = np.arange(n_items)
    return idx[:ns], idx[ns:ns + nh]


def rescale(values: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of the last axis onto ``length`` evenly spaced points (end points kept)."""
    values = np.asarray(values, dtype=np.float64)
    m = values.shape[-1]
    if m == length:
        return values.copy()
    if m == 1:
        return np.repeat(values, length, axis=-1)
    src = np.linspace(0.0, 1.0, m)
    dst = np.linspace(0.0, 1.0, length)
    flat = values.reshape(-1, m)
    return np.stack([np.interp(dst, src, r) for r in flat]).reshape(values.shape[:-1] + (length,))


def aligned_map(rows: np.ndarray, x_spans: np.ndarray, y_spans: np.ndarray, test_span: np.ndarray,
                query_pos: int, x_len: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 2 alignment of one prompt's attention rows ``[L, H, S]``.

    Segments, in order: the prefix before x_1; for each demonstration x_i linearly rescaled to
    ``x_len`` positions followed by the tokens up to the next x (``Output:``, y_i, separator,
    ``Input:``) kept as they are; then x_test rescaled to ``x_len`` and the tail up to the query.
    Template segments have the same length in every prompt when label words are single tokens, so
    aligned maps of different prompts can be averaged position by position.

    Returns the aligned rows ``[L, H, T]`` and a code per aligned position ``[T]``:
    0 template, 1 x_i, 2 x_test, 3 y_i.
    """
    rows = np.asarray(rows, dtype=np.float64)
    starts = [int(v) for v in x_spans[:, 0]] + [int(test_span[0])]
    ends = [int(v) for v in x_spans[:, 1]] + [int(test_span[1])]
    ypos = set()
    for a, b in np.asarray(y_spans).reshape(-1, 2):
        ypos.update(range(int(a), int(b)))
    pieces = [rows[..., :starts[0]]]
    codes = [0] * starts[0]
    for i in range(len(starts)):
        pieces.append(rescale(rows[..., starts[i]:ends[i]], x_len))
        codes += [2 if i == len(starts) - 1 else 1] * x_len
        nxt = starts[i + 1] if i + 1 < len(starts) else query_pos + 1
        pieces.append(rows[..., ends[i]:nxt])
        codes += [3 if t in ypos else 0 for t in range(ends[i], nxt)]
    return np.concatenate(pieces, axis=-1), np.asarray(codes)


def pearson_per_head(attn: np.ndarray, sim: np.ndarray) -> np.ndarray:
    """Pearson r between a head's attention on sample i and sim(x_test, x_i), pooled over all
    (test point, sample) pairs. ``attn[N, L, H, n]``, ``sim[N, n]`` -> ``[L, H]`` (nan where constant)."""
    a = np.asarray(attn, dtype=np.float64)
    N, L, H, n = a.shape
    a = a.transpose(1, 2, 0, 3).reshape(L, H, N * n)
    s = np.asarray(sim, dtype=np.float64).reshape(N * n)
    a = a - a.mean(-1, keepdims=True)
    s = s - s.mean()
    num = (a * s).sum(-1)
    den = np.sqrt((a * a).sum(-1) * (s * s).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def prediction_similarity(p_test: np.ndarray, p_demo: np.ndarray) -> np.ndarray:
    """sim(x_test, x_i) = P(o|x_test)ᵀ P(o|x_i). ``p_test[N, V]``, ``p_demo[N, n, V]`` -> ``[N, n]``."""
    return np.einsum("nv,niv->ni", p_test, p_demo)


def ridge_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                lam: float = 0.01) -> float:
    r"""Accuracy of a one-hot multi-output ridge classifier (λ = ``lam``, intercept not penalised).

    Solves :math:`W = (X^\top X + \lambda I)^{-1} X^\top Y` on centred features and targets; the
    prediction is the argmax over the classes seen in training. Test labels unseen in training count
    as errors.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    classes, yi = np.unique(np.asarray(y_train), return_inverse=True)
    Y = np.eye(len(classes))[yi]
    mx, my = x_train.mean(0), Y.mean(0)
    Xc = x_train - mx
    d = Xc.shape[1]
    W = np.linalg.solve(Xc.T @ Xc + lam * np.eye(d), Xc.T @ (Y - my))
    pred = classes[np.argmax((x_test - mx) @ W + my, axis=1)]
    return float(np.mean(pred == np.asarray(y_test)))


def kernel_regression(emb_test: np.ndarray, emb_demo: np.ndarray, demo_labels: np.ndarray, n_classes: int,
                      tau: float = 0.1) -> np.ndarray:
    r"""Nadaraya–Watson prediction with a softmax-of-cosine kernel over each item's own demonstrations,
    computed by theory's estimator (:func:`theory.kernels.kernel_regression`, β = 1/τ).

    :math:`\hat y = \arg\max_y \sum_i \exp(\cos(e_{test}, e_i)/\tau)\, e(y_i)[y]`.
    ``emb_test[N, D]``, ``emb_demo[N, n, D]``, ``demo_labels[N, n]`` -> ``[N]``.
    """
    K = tk.kernel_values_vector(np.asarray(emb_test, np.float64), np.asarray(emb_demo, np.float64), beta=1.0 / tau)
    labels = np.asarray(demo_labels)
    est, _ = tk.kernel_regression(K, labels, n_classes, [labels.shape[1]])
    return np.argmax(est[0], axis=-1)


def bootstrap_ci(correct: np.ndarray) -> tuple[float, float]:
    """95% percentile bootstrap interval (1000 resamples, seed 0) of the mean of a 0/1 vector,
    by theory's bootstrap (:func:`theory.stats.bootstrap_mean`)."""
    _, lo, hi, _ = bootstrap_mean(np.asarray(correct, np.float64))
    return lo, hi


# ----------------------------------------------------------------------------------------------
# Position-aware baselines: what a head must beat to count as a *similarity* kernel. Shared by the
# real-data report (llm_check.realdata.report) and transformer-check (llm_check.synthetic).


def last_label(demo_labels: np.ndarray) -> np.ndarray:
    """The label of the last demonstration (the one next to the query). ``[N, n]`` -> ``[N]``."""
    return np.asarray(demo_labels)[:, -1]


def majority_label(demo_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The most frequent demonstration label (ties to the lower class). ``[N, n]`` -> ``[N]``."""
    onehot = np.eye(n_classes)[np.asarray(demo_labels)]
    return np.argmax(onehot.sum(1), axis=-1)


def position_profile(weights: np.ndarray) -> np.ndarray:
    """Each head's mean kernel weight at each demonstration position. ``weights[N, L, H, n]`` -> ``[L, H, n]``."""
    return np.asarray(weights, np.float64).mean(0)


def position_vote(profile: np.ndarray, demo_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The position-only vote: every prompt weighted by the same per-position profile (it knows the
    slot, not the content). ``profile[L, H, n]``, ``demo_labels[N, n]`` -> ``[N, L, H]``."""
    onehot = np.eye(n_classes)[np.asarray(demo_labels)]             # [N, n, C]
    votes = np.einsum("lhi,nic->nlhc", np.asarray(profile, np.float64), onehot)
    return np.argmax(votes, axis=-1)


class HeadVsPosition(NamedTuple):
    """Held-out agreement (with ŷ) of a head's reconstruction and of its position-only vote, and the
    exact McNemar test of the paired outcomes (b: only the head agrees; c: only the vote agrees)."""

    head_agreement: float
    position_agreement: float
    only_head: int
    only_position: int
    p_value: float
    kernel_like: bool


def head_vs_position(recon: np.ndarray, pos_vote: np.ndarray, target: np.ndarray, alpha: float = 0.05) -> HeadVsPosition:
    """``recon[N]``, ``pos_vote[N]``, ``target[N]`` (ŷ) on held-out items. Kernel-like: the head agrees
    with ŷ more often than its position-only vote, with McNemar p < ``alpha``."""
    a = np.asarray(recon) == np.asarray(target)
    b = np.asarray(pos_vote) == np.asarray(target)
    only_a, only_b, p = mcnemar_exact(a, b)
    return HeadVsPosition(float(a.mean()), float(b.mean()), only_a, only_b, p,
                          bool(a.mean() > b.mean() and p < alpha))


def most_frequent(labels: np.ndarray, n_classes: int) -> int:
    """The most frequent class of ``labels[N]`` (ties to the lower class)."""
    return int(np.bincount(np.asarray(labels), minlength=n_classes).argmax())


class PositionBaselines(NamedTuple):
    """Every head's vote beside the content-free predictions it must beat, on N items (class indices).

    Attributes:
        recon: ``[N, L, H]`` each head's vote, :func:`reconstruct` with ``rule="argmax"``.
        profile: ``[L, H, n]`` each head's mean weight per demonstration position over the selection items.
        position_vote: ``[N, L, H]`` the vote of that profile (the slot, not the content).
        last_label: ``[N]`` the last demonstration's label.
        majority: ``[N]`` the most frequent demonstration label.
    """

    recon: np.ndarray
    profile: np.ndarray
    position_vote: np.ndarray
    last_label: np.ndarray
    majority: np.ndarray


def position_baselines(weights: np.ndarray, demo_labels: np.ndarray, n_classes: int,
                       select: np.ndarray) -> PositionBaselines:
    """``weights[N, L, H, n]`` per-demonstration weights, ``demo_labels[N, n]``, ``select`` the items the
    position profile is estimated on."""
    w = np.asarray(weights, np.float64)
    labels = np.asarray(demo_labels)
    profile = position_profile(w[select])
    return PositionBaselines(reconstruct(w, labels, n_classes, "argmax"), profile,
                             position_vote(profile, labels, n_classes), last_label(labels),
                             majority_label(labels, n_classes))


BASELINES = ("last_label", "position_vote", "majority_vote", "constant")


class BaselineVs(NamedTuple):
    """One baseline against the chosen head on the held-out items: its agreement with the target and
    the exact McNemar test of the paired outcomes (b: only the head agrees; c: only the baseline)."""

    agreement: float
    only_head: int
    only_baseline: int
    p_value: float


class BaselineScores(NamedTuple):
    """The chosen head and every baseline against one target on the held-out items.

    Attributes:
        head: the chosen head against its own position-only vote (:class:`HeadVsPosition`).
        versus: baseline name (:data:`BASELINES`) → :class:`BaselineVs`.
        constant: the class the ``constant`` baseline predicts.
        kernel_like: ``[L, H]`` bool, each head's :func:`head_vs_position` verdict against its own vote.
        head_agreement: ``[L, H]`` each head's vote's agreement with the target.
        position_vote_agreement: ``[L, H]`` each head's position-only vote's agreement with the target.
    """

    head: HeadVsPosition
    versus: dict
    constant: int
    kernel_like: np.ndarray
    head_agreement: np.ndarray
    position_vote_agreement: np.ndarray


def score_baselines(pb: PositionBaselines, target: np.ndarray, held: np.ndarray, layer: int, head: int,
                    constant: int) -> BaselineScores:
    """Score head (``layer``, ``head``) and the baselines of ``pb`` against ``target[N]`` on the items
    ``held``; ``constant`` is the class of the constant baseline (see :func:`most_frequent`)."""
    t = np.asarray(target)[held]
    recon, pv = pb.recon[held], pb.position_vote[held]
    L, H = recon.shape[1:]
    head_ok = recon[:, layer, head] == t
    rivals = {"last_label": pb.last_label[held], "position_vote": pv[:, layer, head],
              "majority_vote": pb.majority[held], "constant": np.full(len(t), constant)}
    versus = {}
    for name, pred in rivals.items():
        b, c, p = mcnemar_exact(head_ok, pred == t)
        versus[name] = BaselineVs(follow_rate(t, pred), b, c, p)
    kernel_like = np.array([[head_vs_position(recon[:, i, j], pv[:, i, j], t).kernel_like for j in range(H)]
                            for i in range(L)], dtype=bool).reshape(L, H)
    return BaselineScores(head_vs_position(recon[:, layer, head], pv[:, layer, head], t), versus, int(constant),
                          kernel_like, head_accuracy(recon, t), head_accuracy(pv, t))


def _per_head_sim(sim: np.ndarray, L: int, H: int) -> np.ndarray:
    """``sim[N, n]`` (same for every head) or ``[N, L, n]`` (per layer) -> ``[N, L, H, n]``."""
    s = np.asarray(sim, np.float64)
    if s.ndim == 2:
        return np.broadcast_to(s[:, None, None, :], (s.shape[0], L, H, s.shape[1]))
    if s.ndim == 3:
        return np.broadcast_to(s[:, :, None, :], (s.shape[0], L, H, s.shape[2]))
    raise ValueError(f"similarity of shape {s.shape}; expected [N, n] or [N, L, n]")


def _pooled_r(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Pearson r pooled over (item, position): ``a, s [N, L, H, n]`` -> ``[L, H]`` (nan where constant)."""
    a = a - a.mean(axis=(0, 3), keepdims=True)
    s = s - s.mean(axis=(0, 3), keepdims=True)
    num = (a * s).sum(axis=(0, 3))
    den = np.sqrt((a * a).sum(axis=(0, 3)) * (s * s).sum(axis=(0, 3)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12 * max(1.0, float(np.max(den, initial=0.0))), num / np.where(den > 0, den, 1.0), np.nan)


def remove_position(x: np.ndarray) -> np.ndarray:
    """Residualise on position: subtract each position's mean over items. ``x[N, ..., n]``."""
    x = np.asarray(x, np.float64)
    return x - x.mean(0, keepdims=True)


class PositionControlled(NamedTuple):
    """Per head ``[L, H]``: Pearson r pooled over (item, demonstration) before removing position,
    after residualising both sides on position, and the within-position permutation p-value of the
    residualised r (similarities shuffled among items at the same position)."""

    r_raw: np.ndarray
    r_within: np.ndarray
    p_within: np.ndarray


def position_controlled_corr(attn: np.ndarray, sim: np.ndarray, n_perm: int = 200, seed: int = 0) -> PositionControlled:
    """Attention vs similarity with and without position. ``attn[N, L, H, n]``; ``sim[N, n]`` or
    ``[N, L, n]`` (a per-layer similarity such as the LM's hidden-state cosine at that layer)."""
    a = np.asarray(attn, np.float64)
    N, L, H, n = a.shape
    s = _per_head_sim(sim, L, H)
    r_raw = _pooled_r(a, s)
    ar, sr = remove_position(a), remove_position(s)
    r_w = _pooled_r(ar, sr)
    rng = np.random.default_rng(seed)
    exceed = np.zeros((L, H))
    for _ in range(n_perm):
        perm = np.stack([rng.permutation(N) for _ in range(n)], axis=1)       # [N, n]: shuffle within position
        sp = np.take_along_axis(sr, perm[:, None, None, :], axis=0)
        exceed += np.abs(_pooled_r(ar, sp)) >= np.abs(r_w) - 1e-12
    p = (exceed + 1) / (n_perm + 1)
    return PositionControlled(r_raw, r_w, np.where(np.isnan(r_w), np.nan, p))


def follow_rate(yhat: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of items whose prediction equals the given per-item label (e.g. the last demonstration's)."""
    return float(np.mean(np.asarray(yhat) == np.asarray(labels)))
