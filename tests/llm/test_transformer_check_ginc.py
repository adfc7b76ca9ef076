"""icl-kernel transformer-check on GINC sweeps (prompt laws ginc-id / ginc-ood) on a tiny drawn GINC:
the sweep's own numbers reproduced per prompt, GINC's prompt layout, context skipping, the Oracle
under the prompt law, a model pretrained on a custom file of the same arrays, and one-line refusals."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from icl_kernel.cli import main
from llm_check.models import forward
from llm_check.synthetic import train
from llm_check.synthetic import transformer_check as tc
from simulate import ginc
from simulate.sampling import Prompts
from simulate.sweep import SweepConfig, load_run_hmm, run_sweep
from icl_kernel.runfolder import open_existing

TINY = dict(n_values=3, n_slots=4, vocab=8, n_concepts=2, n_ood=2)
KERNELS = ("predictive", "belief:beta=20")
QUIET = dict(quiet=True, log=lambda *_: None)


def _pretrain(out, **kw):
    base = dict(preset="ginc", preset_params=dict(TINY), n_embd=16, n_layer=1, n_head=2, context=40, batch_size=4,
                steps=2, warmup_steps=1, eval_every=2, eval_docs=4, ngram_docs=8, checkpoint_every=2)
    base.update(kw)
    train.run_pretrain(train.PretrainConfig(**base), out, **QUIET)


def _sweep(out, law, grid=(0, 1, 2, 4, 16), length=2, kernels=KERNELS, P=16):
    with jax.enable_x64(True):
        run_sweep(SweepConfig(preset="ginc", preset_params=dict(TINY), prompt_law=law, grid=grid, seeds=(0,),
                              prompts_per_seed=P, length=length, kernels=kernels, save_predictions=P), out, **QUIET)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tcg")
    _pretrain(root / "model")                                  # context 40: n = 16 (67 positions) does not fit
    _sweep(root / "id", "ginc-id")
    _sweep(root / "ood", "ginc-ood")
    _sweep(root / "long", "ginc-id", grid=(0, 1), length=20, P=2)   # k = 21: n = 1 needs 43 positions
    return root


def _strict(path):
    def bad(c):
        raise AssertionError(f"{path} holds {c}")
    return json.loads(path.read_text(), parse_constant=bad)


@pytest.fixture(scope="module")
def checked(runs):
    out = {}
    for law in ("id", "ood"):
        s = tc.run_transformer_check(tc.CheckConfig(str(runs / "model"), str(runs / law)), runs / f"tc-{law}", **QUIET)
        out[law] = s
    return out


def test_ginc_layout_is_gincs_prompt():
    """The model reads BOS + GINC's own flat prompt (simulate.ginc.prompt_tokens), and the positions of
    the labels, delimiters and the last x_test token are where GINC puts them."""
    rng = np.random.default_rng(3)                  # tokens as GINC's: '/' (0) may occur inside an example too
    pr = Prompts(rng.integers(0, 8, (7, 5, 2)), rng.integers(0, 8, (7, 5)), rng.integers(0, 8, (7, 2)),
                 rng.integers(0, 8, 7), np.zeros(7, int))
    for n in (0, 1, 5):
        ids = tc.model_inputs(pr, n, ginc.DELIM, 8)
        toks, length = ginc.prompt_tokens(pr.demos_x, pr.demos_y, pr.x_test, n)
        np.testing.assert_array_equal(ids[:, 1:], toks)
        assert (ids[:, 0] == 8).all() and ids.shape[1] == tc.prompt_positions(n, 2) == 1 + n * 4 + 2
        pos = tc.demo_positions(n, 2)
        assert pos.query == ids.shape[1] - 1
        np.testing.assert_array_equal(ids[:, pos.label], pr.demos_y[:, :n])
        assert (ids[:, pos.delim] == ginc.DELIM).all()


def test_label_accuracy_and_undefined_argmax():
    pred = np.array([[[0.1, 0.7, 0.2], [np.nan, np.nan, np.nan]], [[0.5, 0.2, 0.3], [0.2, 0.2, 0.6]]])
    acc = tc.label_accuracy(pred, np.array([1, 12]), [10, 11, 12])    # labels are tokens: 1 is no label
    np.testing.assert_array_equal(acc[0], [0.0, np.nan])
    np.testing.assert_array_equal(acc[1], [0.0, 1.0])
    acc = tc.label_accuracy(pred, np.array([11, 10]), [10, 11, 12])
    np.testing.assert_array_equal(acc, [[1.0, np.nan], [1.0, 0.0]])
    np.testing.assert_array_equal(tc.defined_argmax(pred[:, 1]), [-1, 2])


@pytest.mark.slow
def test_ginc_id_reproduces_the_sweep_per_prompt(runs, checked):
    s = checked["id"]
    g = s["ginc"]
    assert s["config"]["grid"] == [0, 1, 2, 4] and g["skipped_n"] == [16] and g["sweep_grid"] == [0, 1, 2, 4, 16]
    assert "n = 16 skipped" in g["note"] and "67 positions" in g["note"] and s["config"]["same_hmm"]
    assert g["hmm_max_abs_diff"] == 0.0 and s["config"]["labels"] == list(range(8))
    summ = _strict(runs / "tc-id" / "summary.json")                           # strict JSON: no NaN anywhere
    assert summ["ginc"]["zero_count"] == g["zero_count"]
    cells = np.load(runs / "id" / "cells" / "seed_0.npz")
    pred = np.load(runs / "id" / "predictions.npz")
    mine = np.load(runs / "tc-id" / "cells" / "seed_0.npz")
    G = 4                                                                      # the sweep's first 4 columns
    zero = mine["zero"]
    np.testing.assert_array_equal(zero, cells["common|zero_probability"][:, :G].astype(bool))
    assert zero.any() and not zero[:, 0].any()                                # some prompts have P = 0, none at n = 0
    np.testing.assert_array_equal(np.isnan(mine["bayes"]).all(-1), zero)
    np.testing.assert_allclose(mine["bayes"], pred["bayes"][:, :G], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(mine["oracle"], pred["oracle"])            # the Oracle recomputed from the law
    np.testing.assert_array_equal(tc.label_accuracy(mine["bayes"], mine["label"], list(range(8))),
                                  cells["common|bayes_accuracy"][:, :G])
    for j, k in enumerate(s["config"]["kernels"]):
        y = mine["kernel_yhat"][:, j, 1:]                                     # n = 1, 2, 4
        np.testing.assert_allclose(y, pred[f"kernel|{k}"][:, :G - 1], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(tc.label_accuracy(y, mine["label"], list(range(8))),
                                      cells[f"kernel|{k}|accuracy"][:, :G - 1])
        # the attention comparison's weights are the evaluator's: their normalised vote is its ŷ at n = 4
        lab = mine["label_idx"]
        vote = np.einsum("pn,pny->py", tc.normalised(mine["kernel_values"][:, j]), np.eye(8)[lab])
        ok = np.isfinite(vote).all(-1)
        np.testing.assert_allclose(vote[ok], y[ok, -1], rtol=1e-9, atol=1e-12)
    c = s["curves"]
    P = 16
    assert c["transformer"]["count_l1_bayes"] == [P - int(z) for z in zero.sum(0)]
    assert c["transformer"]["count_accuracy"] == [P] * G and c["bayes"]["count_accuracy"] == c["transformer"]["count_l1_bayes"]
    np.testing.assert_allclose(c["bayes"]["accuracy"], np.nanmean(cells["common|bayes_accuracy"][:, :G], 0))
    np.testing.assert_allclose(c["oracle"]["accuracy"], [1.0] * G)           # GINC's ID label is the Oracle's argmax
    p = mine["transformer"]
    assert p.shape == (P, G, 8) and np.allclose(p.sum(-1), 1)
    # the transformer's numbers are the model's softmax at the last x_test token, over all 8 symbols
    model, _, _ = train.load_trained(runs / "model")
    prs = open_existing(runs / "id", "sweep").load_npz("prompts/seed_0.npz")
    toks, _ = ginc.prompt_tokens(prs["demos_x"], prs["demos_y"], prs["x_test"], 4)
    ids = np.concatenate([np.full((P, 1), 8), toks], 1).astype(np.int32)
    logits = np.asarray(forward(model, ids).logits[:, -1], np.float64)[:, :8]
    want = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(p[:, -1], want / want.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)
    h = s["heads"]
    assert h["n"] == 4 and set(h["position"]) == set(tc.READS)
    for read in tc.READS:
        ag = h["position"][read]["against"]
        assert set(ag) == {"transformer", "bayes", "label"}
        assert ag["transformer"]["prompts"] == 8 and ag["bayes"]["prompts"] == int((~zero[1::2, -1]).sum())
    for f in ("error_vs_n.png", "head_map.png", "attention_scatter.png", "position_map.png", "metrics.csv"):
        assert (runs / "tc-id" / f).stat().st_size > 0
    rows = (runs / "tc-id" / "metrics.csv").read_text().splitlines()
    assert rows[0].endswith("count_accuracy") and len(rows) == 1 + G * (3 + len(KERNELS))
    text = tc.format_table(s)
    assert "n = 16 skipped" in text and "P(prompt | p_pre) = 0 fraction" in text and "Bayes (P>0 prompts)" in text
    # a rerun resumes from the cells (GINC fields included) and gives the same summary
    again = tc.run_transformer_check(tc.CheckConfig(str(runs / "model"), str(runs / "id")), runs / "tc-id", **QUIET)
    assert _strict(runs / "tc-id" / "summary.json") == summ and again["ginc"]["zero_count"] == g["zero_count"]


@pytest.mark.slow
def test_ginc_ood_oracle_undefined_like_the_sweep(runs, checked):
    s = checked["ood"]
    cells = np.load(runs / "ood" / "cells" / "seed_0.npz")
    mine = np.load(runs / "tc-ood" / "cells" / "seed_0.npz")
    defined = cells["common|oracle_defined"][:, 0].astype(bool)
    np.testing.assert_array_equal(mine["oracle_defined"], defined)
    np.testing.assert_array_equal(np.isnan(mine["oracle"]).all(-1), ~defined)
    assert s["ginc"]["oracle_defined_count"] == int(defined.sum()) and s["ginc"]["prompt_law"] == "ginc-ood"
    np.testing.assert_array_equal(mine["zero"], cells["common|zero_probability"][:, :4].astype(bool))
    np.testing.assert_allclose(s["curves"]["oracle"]["count_accuracy"], [int(defined.sum())] * 4)
    _strict(runs / "tc-ood" / "summary.json")


@pytest.mark.slow
def test_model_pretrained_on_a_custom_file_of_the_same_arrays(runs, tmp_path):
    hmm = load_run_hmm(open_existing(runs / "model", "pretrain"))
    np.savez(tmp_path / "ginc.npz", **hmm._asdict())
    _pretrain(tmp_path / "custom", preset="custom", preset_params={}, hmm_file=str(tmp_path / "ginc.npz"), steps=1,
              eval_every=1, checkpoint_every=1)
    rc = tc.resolve(tc.CheckConfig(str(tmp_path / "custom"), str(runs / "id")))
    assert rc.identity.same_hmm and rc.identity.ginc["hmm_max_abs_diff"] <= tc.HMM_ATOL and rc.ginc.law == "id"
    assert tc.hmm_difference(hmm, hmm._replace(T=np.asarray(hmm.T) + 1e-9)) == pytest.approx(1e-9, rel=1e-6)
    assert tc.hmm_difference(hmm, hmm._replace(T=np.asarray(hmm.T)[:-1])) == float("inf")


@pytest.mark.slow
@pytest.mark.parametrize("sweep, extra, needle", [
    ("long", [], "no grid point n >= 1 of sweep"),
    ("ood", ["--kernels", "task"], "kernel 'task' with the sweep's prompt law 'ginc-ood'"),
])
def test_ginc_refusals_one_line_nothing_written(runs, tmp_path, capsys, sweep, extra, needle):
    out = tmp_path / "runs"
    code = main(["transformer-check", str(runs / "model"), str(runs / sweep), "--runs-dir", str(out), "-q", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()
