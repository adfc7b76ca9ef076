"""Prompt law vs scoring law: demonstrations drawn with the delimiter that follows them (exact law,
checked against enumeration), Bayes on HMMs with a varying delimiter weight and with no restart
(R = T) equal to brute-force path sums, zero-probability prompts reported, GINC's documents against
GINC's reference output, and GINC sweeps end to end."""
import itertools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simulate.sweep import SweepConfig, SweepConfigError, run_sweep
from theory.hmm import make_hmm
from theory.reference import path_probability_sum, predictive_by_enumeration

REF = Path(__file__).resolve().parents[3] / "shared" / "data" / "ginc" / "ginc_reference.npz"
needs_ref = pytest.mark.skipif(not REF.exists(), reason=f"GINC reference data not found at {REF}")


def varying_hmm(seed=0, d=4, m=5, no_restart=False, w=(0.1, 0.4, 0.25, 0.05)):
    """Two tasks of two states each; the delimiter (token 0) weight differs from state to state."""
    rng = np.random.default_rng(seed)
    T = np.zeros((d, d))
    for k in range(2):
        T[2 * k:2 * k + 2, 2 * k:2 * k + 2] = rng.dirichlet(np.ones(2), size=2)
    w = np.asarray(w, float)
    B = np.concatenate([w[:, None], rng.dirichlet(np.ones(m - 1), size=d) * (1 - w)[:, None]], 1)
    starts = np.eye(d)[[0, 2]]
    tos = np.array([0, 0, 1, 1])
    R = T.copy() if no_restart else starts[tos]
    return make_hmm(T, B, R, starts.mean(0), starts, tos, 0)


@pytest.mark.parametrize("no_restart", [False, True])
def test_bayes_equals_brute_force_path_sums(no_restart):
    """The general forward (and, where it applies, the factorisation) on an HMM whose delimiter weight
    varies within a task, with a restart and with none (R = T): Bayes and the evidence equal path sums."""
    from simulate.evaluator import choose_forward
    from simulate.factorised import factorised_arrays, sweep_bayes_factorised
    from simulate.forward import hmm_arrays, prompt_tokens, sweep_bayes
    from simulate.sampling import sample_prompts

    hmm = varying_hmm(no_restart=no_restart)
    labels = [1, 2, 3]
    pr = sample_prompts(jax.random.PRNGKey(3), hmm, labels, 3, 2, 1)
    grid = (0, 1, 2)
    sb = sweep_bayes(hmm_arrays(hmm, jnp.float64), pr.demos_x, pr.demos_y, pr.x_test, pr.task,
                     jnp.asarray(labels), grid)
    for g, n in enumerate(grid):
        toks = np.asarray(prompt_tokens(pr.demos_x, pr.demos_y, pr.x_test, n, 0))
        for p in range(3):
            np.testing.assert_allclose(np.asarray(sb.bayes[g, p]),
                                       predictive_by_enumeration(hmm, list(toks[p]), labels), rtol=1e-10)
            ev = path_probability_sum(hmm, list(toks[p]))
            np.testing.assert_allclose(float(sb.log_evidence[g, p]), math.log(ev), rtol=1e-10)
    assert choose_forward(hmm, labels, 1) == ("general" if no_restart else "factorised")
    if not no_restart:
        fb = sweep_bayes_factorised(factorised_arrays(hmm, labels, 1, jnp.float64), pr.demos_x, pr.demos_y,
                                    pr.x_test, pr.task, grid)
        np.testing.assert_allclose(np.asarray(fb.bayes), np.asarray(sb.bayes), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(fb.log_evidence), np.asarray(sb.log_evidence), rtol=1e-10)


def test_demonstrations_follow_their_exact_law():
    """Demonstrations x y δ of a task, sampled, against the enumerated law ∝ sᵀ T_x diag(b_y) T w_δ (the
    delimiter weight varies by state, so leaving out T w_δ would be another law: checked to be rejected)."""
    from simulate.sampling import sample_prompts

    hmm = varying_hmm(seed=1, w=(0.02, 0.7, 0.3, 0.05))
    labels, l, N = [1, 2], 2, 20000
    T, B, w = (np.asarray(a, float) for a in (hmm.T, hmm.B, hmm.delim_weight))
    s = np.asarray(hmm.task_start, float)[0]
    inputs = [o for o in range(hmm.num_tokens) if o != 0]
    cells = list(itertools.product(itertools.product(inputs, repeat=l), labels))

    def law(with_delim):
        p = []
        for x, y in cells:
            v = s.copy()
            for o in x:
                v = (v * B[:, o]) @ T
            p.append(float(v @ (B[:, y] * (T @ w if with_delim else 1.0))))
        p = np.array(p)
        return p / p.sum()

    pr = sample_prompts(jax.random.PRNGKey(0), hmm, labels, N, 1, l, task=0)
    index = {c: i for i, c in enumerate(cells)}
    # demonstration 0 starts from p0 on the task's block, which is the task start here; x_test has no label
    counts = np.bincount([index[(tuple(int(t) for t in x), int(y))] for x, y in zip(pr.demos_x[:, 0], pr.demos_y[:, 0])],
                         minlength=len(cells))

    def chi2(p):
        e = N * p
        return float(((counts - e) ** 2 / e).sum())

    dof = len(cells) - 1
    bound = dof + 5 * math.sqrt(2 * dof)  # mean + 5 sd of the chi-square law
    assert chi2(law(True)) < bound
    assert chi2(law(False)) > bound  # the sampler's law differs detectably from the delimiter-free one


def test_varying_delimiter_and_no_restart_accepted_and_zero_probability_reported(tmp_path):
    """A custom HMM with a state-dependent delimiter weight and R = T runs with the matched law; prompts
    of probability 0 under p_pre (a delimiter transition p_pre forbids) are counted, never NaN in the summary."""
    hmm = varying_hmm(no_restart=True)
    T = np.asarray(hmm.T).copy()
    np.savez(tmp_path / "h.npz", T=T, B=hmm.B, R=T, delim=0, task_of_state=hmm.task_of_state, starts=[0, 2])
    s = run_sweep(SweepConfig(preset="custom", hmm_file=str(tmp_path / "h.npz"), grid=(0, 1, 3), seeds=(0,),
                              prompts_per_seed=12, length=1, kernels=("belief",)), tmp_path / "c", quiet=True)
    cfg = s["config"]
    assert cfg["prompt_law"] == "matched" and cfg["scoring_law"].startswith("p_pre") and cfg["forward"] == "general"
    text = (tmp_path / "c" / "summary.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"summary.json holds {c}"))
    assert "nan" not in (tmp_path / "c" / "metrics.csv").read_text().lower()
    z = s["common"]["zero_probability"]
    acc = s["common"]["bayes_accuracy"]
    for zi, ai in zip(z, acc):  # Bayes is averaged over the prompts of positive probability only
        assert ai["count"] == round(12 * (1 - zi["mean"]))


def test_zero_probability_prompt_is_exact():
    """R = T with a transition p_pre forbids after the delimiter: the prompt has log evidence -inf
    (path sum 0), which the sweep counts as zero probability rather than refusing."""
    from simulate.evaluator import Evaluation, zero_mask
    from simulate.forward import hmm_arrays, sweep_bayes

    hmm = varying_hmm(no_restart=True)
    T = np.asarray(hmm.T).copy()
    T[0] = [1.0, 0.0, 0.0, 0.0]  # state 0 never moves to state 1
    T[1] = [0.0, 1.0, 0.0, 0.0]
    B = np.asarray(hmm.B).copy()
    B[0] = [1.0, 0, 0, 0, 0]  # state 0 emits only the delimiter
    B[1] = [0.0, 1.0, 0, 0, 0]  # state 1 emits only token 1
    h = make_hmm(T, B, T, [1.0, 0, 0, 0], np.eye(4)[[0, 2]], hmm.task_of_state, 0)
    dx, dy, xt = np.array([[[1]]]), np.array([[1]]), np.array([[1]])  # "1 1 δ 1": impossible from state 0
    assert path_probability_sum(h, [1, 1, 0, 1, 1]) == 0.0
    sb = sweep_bayes(hmm_arrays(h, jnp.float64), dx, dy, xt, np.array([0]), jnp.asarray([1, 2]), (1,))
    ev = Evaluation(np.moveaxis(np.asarray(sb.bayes), 0, 1), np.asarray(sb.log_evidence).T,
                    np.asarray(sb.task_mass).T, np.asarray(sb.oracle), ())
    assert zero_mask(ev).tolist() == [[True]]


# ------------------------------------------------------------------ GINC


def _tv(a, b):
    return 0.5 * np.abs(a / a.sum() - b / b.sum()).sum()


def _bigrams(docs, m):
    docs = np.asarray(docs, np.int64)
    return np.bincount((docs[:, :-1] * m + docs[:, 1:]).ravel(), minlength=m * m).astype(float)


@needs_ref
def test_ginc_documents_match_gincs_statistics():
    """Our documents fed GINC's published parameters (preset ginc, reference=1) against GINC's own 100
    pretraining documents: unigram and bigram total variation within the reference's own split-half TV
    (sampling error), '/' at GINC's 0.1 per concept; the restart law on the same parameters fails."""
    from simulate import corpus
    from simulate.presets import build_preset

    z = np.load(REF)
    ref = z["train_tok"]
    m = 50
    hmm = build_preset("ginc", dict(reference=1), str(REF))
    assert np.array_equal(np.asarray(hmm.R), np.asarray(hmm.T))
    ours = np.asarray(corpus.documents(corpus.split_key(0, "train"), hmm, 0, ref.shape[0], ref.shape[1]))
    half = ref.shape[0] // 2
    for stat in (lambda d: np.bincount(d.ravel(), minlength=m).astype(float), lambda d: _bigrams(d, m)):
        split = _tv(stat(ref[:half]), stat(ref[half:]))
        assert _tv(stat(ours), stat(ref)) < split, (_tv(stat(ours), stat(ref)), split)
    # '/' per concept: documents from one concept's start; 0.1 within 5 standard errors of the per-document spread
    for c in range(hmm.num_tasks):
        one = hmm._replace(p0=np.asarray(hmm.task_start)[c])
        docs = np.asarray(corpus.documents(corpus.split_key(c, "train"), one, 0, 10, 10240))
        f = (docs == 0).mean(1)
        ref_c = (ref[z["train_hmm"] == c] == 0).mean(1)
        se = max(f.std(ddof=1), ref_c.std(ddof=1)) / math.sqrt(len(f))
        assert abs(f.mean() - 0.1) < 5 * se + 1e-3, (c, f.mean())
    # control: the same concepts with a restarting delimiter (the old ginc law) are detectably different
    S = 100
    starts = np.zeros((hmm.num_tasks, hmm.num_states))
    for c in range(hmm.num_tasks):
        starts[c, c * S + np.arange(10) * 10 + 1] = 0.1
    restart = make_hmm(hmm.T, hmm.B, starts[hmm.task_of_state], hmm.p0, hmm.task_start, hmm.task_of_state, 0)
    bad = np.asarray(corpus.documents(corpus.split_key(0, "train"), restart, 0, ref.shape[0], ref.shape[1]))
    assert _tv(_bigrams(bad, m), _bigrams(ref, m)) > _tv(_bigrams(ref[:half], m), _bigrams(ref[half:], m))


def _no_nan(path):
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path} holds {c}"))


def test_ginc_sweep_id_and_ood(tmp_path):
    """GINC prompt laws through the sweep (drawn parameters): both laws recorded, n = 0 runs, the zero-probability
    fraction reported and Bayes averaged over the rest; GINC's fast Bayes equals the general scan prompt by prompt."""
    from icl_kernel.runfolder import open_existing

    base = dict(preset="ginc", preset_params=dict(seed=1), grid=(0, 1, 2, 4), seeds=(0,), prompts_per_seed=16,
                kernels=("belief",), dtype="float64")
    s = run_sweep(SweepConfig(**base), tmp_path / "id", quiet=True)
    cfg = s["config"]
    assert (cfg["prompt_law"], cfg["forward"], cfg["k"], cfg["length"]) == ("ginc-id", "ginc", 3, 2)
    assert cfg["labels"] == list(range(50)) and cfg["ginc_params_file"] is None
    _no_nan(tmp_path / "id" / "summary.json")
    for zi, ai in zip(s["common"]["zero_probability"], s["common"]["bayes_accuracy"]):
        assert ai["count"] == round(16 * (1 - zi["mean"]))
    assert s["common"]["oracle_accuracy"][0]["mean"] == 1.0  # GINC's label is the Oracle's argmax
    assert [r["n"] for r in s["kernels"]["belief"]["accuracy"]] == [1, 2, 4]
    run_sweep(SweepConfig(**base, forward="general"), tmp_path / "gen", quiet=True)
    a = open_existing(tmp_path / "id").load_npz("cells/seed_0.npz")
    b = open_existing(tmp_path / "gen").load_npz("cells/seed_0.npz")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-12, err_msg=k)
    o = run_sweep(SweepConfig(**base, prompt_law="ginc-ood"), tmp_path / "ood", quiet=True)
    assert o["config"]["prompt_law"] == "ginc-ood" and "posterior_mass_true_task" not in o["common"]
    _no_nan(tmp_path / "ood" / "summary.json")


@pytest.mark.parametrize("kw,msg", [
    (dict(prompt_law="ginc-ood", kernels=("task",)), "kernel 'task' with prompt law 'ginc-ood'"),
    (dict(labels=(1, 2)), "GINC's labels are every symbol"),
    (dict(label_mode="argmax"), "leave --label-mode out"),
    (dict(task=0), "GINC draws the concept"),
    (dict(forward="factorised"), "expected auto"),
    (dict(ginc_params="/no/such/ginc.npz"), "does not exist"),
    (dict(ginc_params="draw", preset_params=dict(reference=1)), "contradicts"),
])
def test_ginc_refusals(tmp_path, kw, msg):
    base = dict(preset="ginc", grid=(1,), seeds=(0,), prompts_per_seed=2, kernels=("belief",))
    base.update(kw)
    with pytest.raises(Exception, match=msg):
        run_sweep(SweepConfig(**base), tmp_path / "r", quiet=True)
    assert not (tmp_path / "r").exists()


def test_ginc_restart_law_refuses_nothing_it_can_score():
    """ginc-restart's documents restart (R sends every state to its concept's start) and its delimiter
    weight is its emission probability: one law for its corpus and its Bayes."""
    from simulate.presets import build_preset

    h = build_preset("ginc-restart")
    dw, B = np.asarray(h.delim_weight), np.asarray(h.B)
    assert np.array_equal(dw, B[:, 0])
    assert np.allclose(np.asarray(h.R), np.asarray(h.task_start)[np.asarray(h.task_of_state)])
