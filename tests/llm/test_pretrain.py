"""icl-kernel pretrain (llm_check.synthetic.train): training lowers the loss, is deterministic, resumes to the
same result, exports a transformers GPT-J, and refuses bad input with nothing written."""
from __future__ import annotations

import json

import numpy as np
import pytest

from icl_kernel.cli import main
from llm_check.synthetic import train

TINY_HAN = dict(num_tasks=2, num_states=4, num_tokens=6, emit_conc=1.0, delim_rate=0.2)


def _cfg(**kw):
    base = dict(preset="han", preset_params=dict(TINY_HAN), size="tiny", n_embd=32, n_layer=1, n_head=2,
                context=24, batch_size=8, steps=16, learning_rate=1e-2, warmup_steps=2, eval_every=4,
                eval_docs=16, ngram_docs=64, checkpoint_every=5, seed=3)
    base.update(kw)
    return train.PretrainConfig(**base)


def _state(folder):
    with np.load(folder / "state.npz") as z:
        return {k: z[k] for k in z.files if not k.startswith("history|seconds")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("pt") / "a"
    summary = train.run_pretrain(_cfg(), out, quiet=True, log=lambda *_: None)
    return out, summary


@pytest.mark.slow
def test_training_lowers_the_loss(uninterrupted):
    out, summary = uninterrupted
    held = np.asarray(_state(out)["history|heldout_loss"])
    assert held.shape == (4,)
    start = np.log(TINY_HAN["num_tokens"] + 1)          # a fresh model predicts about uniformly
    assert held[-1] < held[0] < start + 0.05
    assert summary["final_excess_loss"] == pytest.approx(held[-1] - summary["references"]["bayes"])
    refs = json.loads((out / "references.json").read_text())
    assert refs["bayes"] < refs["bigram"] <= refs["unigram"] + 1e-3


@pytest.mark.slow
def test_same_seed_bit_identical_and_interrupt_resume_equal(uninterrupted, tmp_path):
    out_a, _ = uninterrupted
    out_b = tmp_path / "b"
    first = train.run_pretrain(_cfg(), out_b, quiet=True, stop_after_steps=7, log=lambda *_: None)
    assert first == dict(stopped_at=7)
    assert int(_state(out_b)["step"]) == 7
    train.run_pretrain(_cfg(), out_b, quiet=True, log=lambda *_: None)     # resumes at step 7
    a, b = _state(out_a), _state(out_b)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    train.run_pretrain(_cfg(seed=4), tmp_path / "c", quiet=True, stop_after_steps=4, log=lambda *_: None)
    c = _state(tmp_path / "c")
    assert not np.array_equal(c["leaf_0000"], a["leaf_0000"])        # another seed, another run


@pytest.mark.slow
@pytest.mark.torch
def test_exported_hf_folder_loads_in_transformers(uninterrupted):
    torch = pytest.importorskip("torch")
    import transformers

    from llm_check.models import forward

    out, _ = uninterrupted
    model, resolved, hmm = train.load_trained(out)
    hf = transformers.GPTJForCausalLM.from_pretrained(out / "hf", attn_implementation="eager").eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, hmm.num_tokens, size=(3, 20))
    ids[:, 0] = resolved.bos
    with torch.no_grad():
        ref = hf(input_ids=torch.as_tensor(ids)).logits.numpy()
    ours = np.asarray(forward(model, ids).logits)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(train.all_logits(model, ids)), ref, atol=1e-4, rtol=0)


def test_micro_batch_size_divides_the_batch_and_fits_the_budget():
    mcfg = train.model_config(train.PretrainConfig(size="tiny", context=128), 11)
    m = train.micro_batch_size(64, 128, mcfg, "cpu")
    assert 64 % m == 0 and 1 <= m < 64
    assert train.micro_batch_size(64, 128, mcfg, "gpu") == 64          # accelerators: one piece
    assert train.micro_batch_size(7, 128, mcfg, "cpu") in (1, 7)        # a divisor, even of a prime
    assert train.micro_batch_size(64, 4096, mcfg, "cpu") == 1           # never below one document


def test_chunked_step_equals_the_whole_batch_step():
    """Gradient accumulation over chunks is the whole-batch step up to float rounding."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from simulate import corpus

    cfg = _cfg()
    resolved, hmm, mcfg = train.resolve(cfg)
    opt = train.OptimizerConfig.of(cfg)
    tx, _ = train.make_optimizer(opt)
    docs = jnp.asarray(corpus.documents(corpus.split_key(0, "train"), hmm, 0, cfg.batch_size, cfg.context))
    out = {}
    for micro in (None, 2):
        graphdef, params = nnx.split(train.init_model(mcfg, 0))
        out[micro] = train.train_step(graphdef, params, tx.init(params), docs, opt=opt, bos=resolved.bos,
                                      dtype=jnp.float32, impl="einsum", micro=micro)
    (p1, s1, l1, g1), (p2, s2, l2, g2) = out[None], out[2]
    np.testing.assert_allclose(l2, l1, rtol=1e-6)
    np.testing.assert_allclose(g2, g1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p2, s2))):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    held = train.eval_losses(graphdef, p1, docs, bos=resolved.bos, dtype=jnp.float32, impl="einsum")
    held2 = train.eval_losses(graphdef, p1, docs, bos=resolved.bos, dtype=jnp.float32, impl="einsum", micro=2)
    np.testing.assert_allclose(held2, held, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_chunked_run_resumes_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "CPU_CHUNK_BYTES", 1)                    # one document per chunk
    cfg = _cfg(steps=6, eval_every=3, checkpoint_every=2)
    a = train.run_pretrain(cfg, tmp_path / "a", quiet=True, log=lambda *_: None)
    train.run_pretrain(cfg, tmp_path / "b", quiet=True, stop_after_steps=3, log=lambda *_: None)
    train.run_pretrain(cfg, tmp_path / "b", quiet=True, log=lambda *_: None)
    sa, sb = _state(tmp_path / "a"), _state(tmp_path / "b")
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    assert a["final_excess_loss"] == pytest.approx(float(sb["history|excess_loss"][-1]))


BASE_ARGS = ["pretrain", "-P", "num_tasks=2", "-P", "num_states=4", "-P", "num_tokens=6", "--steps", "2", "-q"]


@pytest.mark.parametrize("extra, needle", [
    (["--n-embd", "30", "--n-head", "4"], "n_embd=30"),
    (["--steps", "0"], "--steps"),
    (["--steps", "-3"], "--steps"),
    (["--lr", "nan"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--name", "../escape"], "../escape"),
    (["--hmm-file", "x.npz"], "--hmm-file"),
    (["-P", "leak=2"], "leak"),
    (["--clip", "-1"], "clip"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, extra, needle):
    runs = tmp_path / "runs"
    code = main(BASE_ARGS + ["--runs-dir", str(runs)] + extra)
    err = capsys.readouterr().err.strip()
    assert code == 2 if code is not None else False
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not runs.exists()
