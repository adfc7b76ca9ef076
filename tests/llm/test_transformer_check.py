"""icl-kernel transformer-check: position bookkeeping against token ids, the attention–kernel
comparison on planted inputs, agreement with the sweep's own numbers, and one-line refusals."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from icl_kernel.cli import main
from llm_check.realdata import analysis as ra
from llm_check.synthetic import train
from llm_check.synthetic import transformer_check as tc
from simulate import metrics
from simulate.evaluator import prepare_kernels
from simulate.presets import build_preset
from simulate.sampling import sample_prompts
from simulate.sweep import SweepConfig, run_sweep
from theory import kernels as tk

HAN = dict(num_tasks=2, num_states=4, num_tokens=6, emit_conc=1.0, delim_rate=0.2)


def _prompts(P=5, N=4, l=3):
    with jax.enable_x64(True):
        hmm = build_preset("han", HAN)
        return hmm, sample_prompts(jax.random.PRNGKey(0), hmm, [1, 2], P, N, l)


def test_positions_match_the_token_ids():
    hmm, pr = _prompts()
    delim, bos = int(hmm.delim), hmm.num_tokens
    for n in (1, 2, 4):
        ids = tc.model_inputs(pr, n, delim, bos)
        pos = tc.demo_positions(n, 3)
        assert ids.shape[1] == pos.query + 1 and (ids[:, 0] == bos).all()
        np.testing.assert_array_equal(ids[:, pos.label], pr.demos_y[:, :n])
        assert (ids[:, pos.delim] == delim).all()
        for i in range(n):
            span = ids[:, pos.span_start[i]:pos.span_end[i] + 1]
            np.testing.assert_array_equal(span, np.concatenate(
                [pr.demos_x[:, i], pr.demos_y[:, i, None], np.full((5, 1), delim)], axis=1))
        np.testing.assert_array_equal(ids[:, pos.query - 2:pos.query + 1], pr.x_test)
        assert not (ids[:, pos.span_end[-1] + 1:] == delim).any()        # x_test has no delimiter


def _planted_rows(weights, pos, S, rng):
    """Attention rows [P, S] whose label, delimiter and span reads all equal ``weights [P, n]``."""
    P, n = weights.shape
    rows = np.zeros((P, S))
    rows[:, pos.label] = 0.5 * weights
    rows[:, pos.delim] = 0.3 * weights
    x_part = 0.2 * weights[..., None] * rng.dirichlet(np.ones(pos.label[0] - pos.span_start[0]), size=(P, n))
    for i in range(n):
        rows[:, pos.span_start[i]:pos.label[i]] = x_part[:, i]
    return rows


def test_planted_attention_equal_to_kernel_weights():
    hmm, pr = _prompts(P=400, N=8)
    rng = np.random.default_rng(0)
    Kv = tk.kernel_values_vector(tk.predictive_features(hmm, pr.x_test), tk.predictive_features(hmm, pr.demos_x))
    w = tc.normalised(Kv)
    pos = tc.demo_positions(8, 3)
    rows = _planted_rows(0.6 * w, pos, pos.query + 1, rng)
    rows[:, pos.query] += 0.4                              # attention outside the demonstrations is ignored
    reads = tc.attention_reads(rows, pos)                  # [P, 3, n]
    for r in range(3):
        np.testing.assert_allclose(reads[:, r], w, atol=1e-12)
        c = tc.compare_weights(reads[:, r], w)
        np.testing.assert_allclose(c["pearson"], 1.0, atol=1e-9)
        np.testing.assert_allclose(c["spearman"], 1.0, atol=1e-9)
        np.testing.assert_allclose(c["l1"], 0.0, atol=1e-9)
    lab = np.argmax(pr.demos_y[..., None] == np.array([1, 2]), -1)
    yhat, _ = tk.kernel_regression(Kv, lab, 2, [8])
    np.testing.assert_allclose(ra.reconstruct(reads[:, 2], lab, 2, "soft"), yhat[0], atol=1e-12)
    shuffled = np.take_along_axis(reads[:, 2], np.argsort(rng.random((400, 8)), -1), -1)
    c = tc.compare_weights(shuffled, w)
    assert abs(np.nanmean(c["pearson"])) < 0.1 and abs(np.nanmean(c["spearman"])) < 0.1


def test_spearman_ranks_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, size=(6, 9)).astype(float)     # many ties
    np.testing.assert_allclose(metrics.average_ranks(x), stats.rankdata(x, axis=-1) - 1)
    a, b = rng.random((5, 7)), rng.random((5, 7))
    want = [stats.spearmanr(a[i], b[i]).statistic for i in range(5)]
    np.testing.assert_allclose(tc.compare_weights(a, b)["spearman"], want, atol=1e-12)


def test_kernel_weights_are_the_evaluators():
    """K(x_test, x_i) read from one-demonstration prompts: their partial sums are the evaluator's
    denominators on the whole prompts, their normalised vote is its ŷ_n, and the predictive kernel's
    equal theory's feature kernel computed directly."""
    hmm, pr = _prompts()                                      # P = 5, N = 4, l = 3
    labels, grid = [1, 2], (1, 2, 4)
    with jax.enable_x64(True):
        specs = [tk.parse_kernel(k) for k in ("predictive", "belief:beta=20", "task")]
        prepared = prepare_kernels(hmm, specs, 3)
    Kv = tc.kernel_weights(hmm, prepared, pr, labels, 4)
    ev = tc.evaluate(hmm, prepared, pr, labels, grid)
    assert Kv.shape == (5, 3, 4) and Kv.dtype == np.float64
    lab = np.argmax(pr.demos_y[..., None] == np.array(labels), -1)
    for j in range(len(specs)):
        den = np.asarray(ev.kernels[j].denominator)
        yhat = np.asarray(ev.kernels[j].yhat)
        for g, n in enumerate(grid):
            np.testing.assert_allclose(Kv[:, j, :n].sum(-1), den[:, g], rtol=1e-12, atol=1e-12 * np.abs(Kv).max())
            np.testing.assert_allclose(ra.reconstruct(tc.normalised(Kv[:, j, :n]), lab[:, :n], 2, "soft"), yhat[:, g],
                                       rtol=1e-9, atol=1e-12)
    direct = tk.kernel_values_vector(tk.predictive_features(hmm, np.asarray(pr.x_test)),
                                     tk.predictive_features(hmm, np.asarray(pr.demos_x)))
    np.testing.assert_allclose(Kv[:, 0], direct, rtol=1e-12)


def _planted_result(target: str, P=800, N=8, n_perm=50):
    """A SeedResult with one layer, three heads, each read identical: head 0 attends by position only
    (a fixed recency profile), head 1 by the same profile times content-blind noise, head 2 exactly by
    the kernel's normalised weights; the kernel itself also rises with position (a confound). The
    transformer's prediction is the position head's vote with 20 % flips (``target="position"``) or
    the kernel vote (``target="kernel"``)."""
    rng = np.random.default_rng(5)
    profile = np.exp(np.linspace(-2.0, 1.0, N))
    profile /= profile.sum()
    w = tc.normalised(profile * np.exp(rng.normal(0, 0.5, (P, N))))               # [P, N]
    noisy = tc.normalised(profile * np.exp(rng.normal(0, 0.3, (P, N))))
    heads = np.stack([np.broadcast_to(profile, (P, N)), noisy, w], axis=1)        # [P, H, N]
    att = np.broadcast_to(heads[:, None, :, None, :], (P, 1, 3, 3, N)).copy()     # [P, L, H, 3 reads, N]
    lab = rng.integers(0, 2, (P, N))
    if target == "position":
        t = ra.reconstruct(np.broadcast_to(profile, (P, N)), lab, 2, "argmax")
        t = np.where(rng.random(P) < 0.2, 1 - t, t)
    else:
        t = ra.reconstruct(w, lab, 2, "argmax")
    onehot = np.eye(2)[t]
    trans = (0.8 * onehot + 0.1)[:, None]                                          # [P, G=1, Y]
    bayes = (0.8 * np.eye(2)[rng.integers(0, 2, P)] + 0.1)[:, None]
    res = tc.SeedResult(trans, bayes, bayes[:, 0], ra.reconstruct(w, lab, 2, "soft")[:, None, None], att,
                        w[:, None], lab)
    return res, profile, tc.head_analysis(res, ["k"], 2, seed=0, n_perm=n_perm)


def test_position_only_attention_has_no_within_position_correlation_and_ties_its_position_vote(tmp_path):
    _, profile, h = _planted_result("position")
    for read in tc.READS:
        p = h["position"][read]
        assert p["head"] == [0, 0]                                                 # the position head votes best
        np.testing.assert_allclose(p["position_profile"], profile, atol=1e-12)     # recency, read off the selection half
        t = p["against"]["transformer"]
        assert t["head_agreement"] == t["position_vote_agreement"] and t["only_head_agrees"] == 0
        assert t["only_position_agrees"] == 0 and t["mcnemar_p"] == 1.0 and not t["kernel_like"]
        assert t["verdict"].startswith("not kernel-like")
        assert t["map_head_agreement"][0][1] <= t["map_position_vote_agreement"][0][1]   # noise only costs agreement
        assert [0, 0] not in t["kernel_like_heads_at"] and [0, 1] not in t["kernel_like_heads_at"]
        c = p["kernels"]["k"]
        assert c["map_r_raw"][0][1] > 0.3                     # position alone makes the raw correlation large
        assert abs(c["map_r_within"][0][1]) < 0.05 and c["map_p_within"][0][1] > 0.01   # and nothing is left
        assert np.isnan(c["r_within"])                        # head 0 is constant within every position
    summary = dict(config=dict(grid=[8]), num_prompts=800, curves={}, heads=h)
    text = tc.format_table(summary)
    assert "position vote" in text and "NOT kernel-like" in text
    plots = pytest.importorskip("llm_check.synthetic.plots")
    plots.position_map(summary, tmp_path / "pm.png")
    assert (tmp_path / "pm.png").stat().st_size > 10_000


def test_attention_equal_to_kernel_weights_correlates_one_before_and_after_removing_position():
    _, _, h = _planted_result("kernel", n_perm=50)
    for read in tc.READS:
        p = h["position"][read]
        assert p["head"] == [0, 2]
        t = p["against"]["transformer"]
        assert t["head_agreement"] == 1.0 and t["position_vote_agreement"] < 0.95
        assert t["mcnemar_p"] < 1e-3 and t["kernel_like"] and t["verdict"].startswith("kernel-like")
        assert t["kernel_like_heads_at"] == [[0, 2]]
        c = p["kernels"]["k"]
        assert c["r_raw"] == pytest.approx(1.0, abs=1e-12) and c["r_within"] == pytest.approx(1.0, abs=1e-12)
        assert c["p_within"] == pytest.approx(1 / 51)
        k = h["kernels"]["k"][read]
        assert k["head"] == [0, 2] and k["position_r_within"] == pytest.approx(1.0, abs=1e-12)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tc")
    cfg = train.PretrainConfig(preset_params=dict(HAN), n_embd=16, n_layer=1, n_head=2, context=40, batch_size=4,
                               steps=3, warmup_steps=1, eval_every=3, eval_docs=4, ngram_docs=8, checkpoint_every=3)
    train.run_pretrain(cfg, root / "model", quiet=True, log=lambda *_: None)
    with jax.enable_x64(True):
        run_sweep(SweepConfig(preset_params=dict(HAN), grid=(1, 2, 4), seeds=(0,), prompts_per_seed=6, length=2,
                              num_labels=2, kernels=("predictive", "belief:beta=20", "gram")),
                  root / "sweep", quiet=True, log=lambda *_: None)
        run_sweep(SweepConfig(preset_params=dict(HAN), grid=(0, 2), seeds=(0,), prompts_per_seed=4, length=2,
                              num_labels=2, kernels=("predictive",)), root / "zero", quiet=True, log=lambda *_: None)
        run_sweep(SweepConfig(preset_params=dict(HAN, num_tokens=9), grid=(1,), seeds=(0,), prompts_per_seed=2,
                              length=2, num_labels=2, kernels=("predictive",)), root / "big", quiet=True,
                  log=lambda *_: None)
    return root


@pytest.mark.slow
def test_end_to_end_agrees_with_the_sweep(runs, tmp_path):
    s = tc.run_transformer_check(tc.CheckConfig(str(runs / "model"), str(runs / "sweep")), tmp_path / "out",
                                 quiet=True, log=lambda *_: None)
    assert s["num_prompts"] == 6 and s["config"]["same_hmm"]
    cells = np.load(runs / "sweep" / "cells" / "seed_0.npz")
    mine = np.load(tmp_path / "out" / "cells" / "seed_0.npz")
    for j, k in enumerate(s["config"]["kernels"]):
        l1 = np.abs(mine["kernel_yhat"][:, j] - mine["bayes"]).sum(-1)
        np.testing.assert_allclose(l1, cells[f"kernel|{k}|kernel_vs_bayes_l1"], atol=1e-4)
    np.testing.assert_allclose(np.abs(mine["bayes"] - mine["oracle"][:, None]).sum(-1),
                               cells["common|bayes_vs_oracle_l1"], atol=1e-4)
    p = mine["transformer"]
    assert p.shape == (6, 3, 2) and np.allclose(p.sum(-1), 1)
    assert set(s["heads"]["position"]) == set(tc.READS)
    for f in ("error_vs_n.png", "head_map.png", "attention_scatter.png", "position_map.png", "metrics.csv",
              "summary.json"):
        assert (tmp_path / "out" / f).stat().st_size > 0


@pytest.mark.slow
def test_n_zero_has_no_kernel_estimate(runs, tmp_path):
    """n = 0 (x_test alone): the transformer and Bayes are scored, the kernels (no demonstrations) are NaN."""
    s = tc.run_transformer_check(tc.CheckConfig(str(runs / "model"), str(runs / "zero")), tmp_path / "out",
                                 quiet=True, log=lambda *_: None)
    c = s["curves"]
    assert np.isnan(c["kernel:predictive"]["l1_bayes"][0]) and np.isfinite(c["kernel:predictive"]["l1_bayes"][1])
    assert np.all(np.isfinite(c["transformer"]["l1_bayes"])) and c["bayes"]["l1_bayes"] == [0.0, 0.0]
    assert (tmp_path / "out" / "error_vs_n.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("which, needle", [
    (("missing", "sweep"), "not found"),
    (("sweep", "sweep"), "expected a run folder of `pretrain`"),
    (("model", "model"), "expected a run folder of `sweep`"),
    (("model", "big"), "tokens 0..8"),
    (("model", "plain"), "not an icl-kernel run folder"),
])
def test_bad_input_one_line_exit_2_nothing_written(runs, tmp_path, capsys, which, needle):
    (runs / "plain").mkdir(exist_ok=True)
    out = tmp_path / "runs"
    code = main(["transformer-check", str(runs / which[0]), str(runs / which[1]), "--runs-dir", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()
