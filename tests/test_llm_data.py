"""Loaders for ../shared/data and user files: counts from the data README, bad input named by file:line."""
from __future__ import annotations

import collections
import os
import pathlib

import pytest

from llm_check.realdata import data
from llm_check.realdata.data_errors import DataError, DecodeError, EmptySplitError, UnknownTaskError

DATA = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")


def _count(ex):
    return dict(collections.Counter(e.label for e in ex))


@needs_data
def test_sst2_counts_match_readme():
    t = data.load_task("sst2", str(DATA))
    # README: validation 872 rows (1->444, 0->428); train 67,349 (1->37,569, 0->29,780).
    assert len(t.evaluation) == 872 and _count(t.evaluation) == {1: 444, 0: 428}
    assert len(t.pool) == 67349 and _count(t.pool) == {1: 37569, 0: 29780}
    assert t.label_words == ("Negative", "Positive")
    assert not t.evaluation[0].text.endswith(" ")  # GLUE's trailing space is stripped


@needs_data
def test_sst2_kim_counts_match_readme():
    t = data.load_task("sst2-kim", str(DATA))
    # README: stsa.binary.test 1,821 rows (0->912, 1->909); stsa.binary.train 6,920 (1->3,610, 0->3,310).
    assert t.name == "sst2_kim"
    assert len(t.evaluation) == 1821 and _count(t.evaluation) == {0: 912, 1: 909}
    assert len(t.pool) == 6920 and _count(t.pool) == {1: 3610, 0: 3310}
    assert t.evaluation[0].text == "no movement , no yuks , not much of anything ."


@needs_data
def test_rotten_tomatoes_hf_split_and_latin1():
    t = data.load_task("rotten_tomatoes", str(DATA))
    assert len(t.pool) == 8530 and len(t.evaluation) == 1066
    assert t.evaluation[0].text.startswith("compassionately explores")  # README: validation[0] = pos line 4266
    assert t.evaluation[0].source.endswith("rt-polarity.pos:4266")
    # Byte 0x85 must not split lines: 5331 per file.
    raw = (DATA / "rotten_tomatoes" / "rt-polarity.pos").read_bytes()
    assert b"\x85" in raw
    assert len(data._read_lines(str(DATA / "rotten_tomatoes" / "rt-polarity.pos"), "latin-1")) == 5331


@needs_data
@pytest.mark.parametrize("name,n_val", [
    ("tweet_eval_hate", 1000), ("tweet_eval_irony", 955), ("tweet_eval_offensive", 1324)])
def test_tweet_eval_sizes(name, n_val):
    t = data.load_task(name, str(DATA))
    assert len(t.evaluation) == n_val
    assert set(e.label for e in t.evaluation) == {0, 1}


@needs_data
def test_mnli_split_and_counts():
    t = data.load_task("mnli", str(DATA))
    assert len(t.pool) + len(t.evaluation) == 9815
    allc = collections.Counter(e.label for e in t.pool + t.evaluation)
    assert allc == {0: 3479, 1: 3123, 2: 3213}  # README counts
    assert t.evaluation[0].text.startswith("The new rights are nice enough Question: Everyone really likes")


@needs_data
@pytest.mark.parametrize("name", data.task_names())
def test_every_builtin_loads_disjoint(name):
    t = data.load_task(name, str(DATA))
    assert {e.source for e in t.pool}.isdisjoint({e.source for e in t.evaluation})
    assert all(e.text for e in t.evaluation[:50])


def test_unknown_task_names_choices(tmp_path):
    with pytest.raises(UnknownTaskError, match="unknown task 'sst3'.*sst2"):
        data.load_task("sst3", str(tmp_path))


def test_missing_data_folder(tmp_path):
    with pytest.raises(DataError, match=r"sst2.*--data-dir"):
        data.load_task("sst2", str(tmp_path))


@pytest.mark.parametrize("task,files,msg", [
    ("sst2", {"train.tsv": "text\tlabel\ngood movie \t1\nbad one\t0\textra\n", "validation.tsv": "text\tlabel\nfine \t1\n"},
     r"train\.tsv:3: expected 2 TAB-separated fields, got 3"),
    ("sst2_kim", {"stsa.binary.train": "1 a fine film\n2 not a label\n", "stsa.binary.test": "0 dull\n"},
     r"stsa\.binary\.train:2: expected '<0\|1> <sentence>'"),
])
def test_malformed_sst2_files_name_file_and_line(tmp_path, task, files, msg):
    d = tmp_path / "sst2"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    with pytest.raises(DataError, match=msg):
        data.load_task(task, str(tmp_path))


def test_empty_split(tmp_path):
    d = tmp_path / "sst2"
    d.mkdir()
    (d / "train.tsv").write_text("text\tlabel\ngood movie \t1\n")
    (d / "validation.tsv").write_text("text\tlabel\n")
    with pytest.raises(EmptySplitError, match="evaluation split"):
        data.load_task("sst2", str(tmp_path))


def test_undecodable_utf8_names_line(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_bytes(b"text\tlabel\nok\t1\ncaf\xe9 bad\t0\n")
    with pytest.raises(DecodeError, match=r"x\.tsv:3: byte 0xe9 .*not valid utf-8.*latin-1"):
        data.read_table(str(p))
    rows = data.read_table(str(p), encoding="latin-1")
    assert rows[1][0] == "café bad"


def test_custom_csv_jsonl_tsv(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"hello, world",pos\nbad,neg\n"ok ""q""",pos\n')
    (tmp_path / "b.jsonl").write_text('{"text": "x1", "label": "neg"}\n{"text": "x2", "label": "pos"}\n')
    t = data.load_custom(str(tmp_path / "a.csv"), str(tmp_path / "b.jsonl"), label_words=["Bad", "Good"])
    assert t.label_names == ("neg", "pos")
    assert [e.text for e in t.pool] == ["hello, world", "bad", 'ok "q"']
    assert [e.label for e in t.pool] == [1, 0, 1]
    assert [e.label for e in t.evaluation] == [0, 1]
    (tmp_path / "c.tsv").write_text("label\ttext\n1\tgood\n0\tbad\n1\tfine\n0\tawful\n")
    t2 = data.load_custom(str(tmp_path / "c.tsv"), None, n_eval=2)
    assert len(t2.pool) == 2 and len(t2.evaluation) == 2 and t2.label_words == ("0", "1")


def test_custom_bad_rows(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x1", "label": 0}\n{"text": "x2" "label": 1}\n')
    with pytest.raises(DataError, match=r"a\.jsonl:2: not valid JSON"):
        data.read_table(str(tmp_path / "a.jsonl"))
    (tmp_path / "b.csv").write_text("sentence,label\nx,1\n")
    with pytest.raises(DataError, match=r"b\.csv:1: header .* no column 'text'"):
        data.read_table(str(tmp_path / "b.csv"))
    (tmp_path / "tr.csv").write_text("text,label\nx,1\ny,0\n")
    (tmp_path / "ev.csv").write_text("text,label\nz,2\n")
    with pytest.raises(DataError, match=r"ev\.csv:2: label '2' does not occur"):
        data.load_custom(str(tmp_path / "tr.csv"), str(tmp_path / "ev.csv"))
    (tmp_path / "e.txt").write_text("x\n")
    with pytest.raises(DataError, match="unknown file type"):
        data.read_table(str(tmp_path / "e.txt"))
    with pytest.raises(DataError, match="data file not found"):
        data.read_table(str(tmp_path / "nope.csv"))


def test_split_on_newline_only(tmp_path):
    p = tmp_path / "f.txt"
    p.write_bytes(b"a\x85b\nc\x0bd\n")
    assert data._read_lines(str(p), "latin-1") == ["a\x85b", "c\x0bd"]
