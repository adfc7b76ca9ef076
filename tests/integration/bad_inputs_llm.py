"""Bad inputs of `icl-kernel llm-check` and `icl-kernel model-info`, for the whole-CLI bad-input test.

``CASES``: (case id, argv after ``icl-kernel``, a substring the one-line error must contain). Each
case must exit 2 with one line on stderr naming the value, no traceback, and nothing created or
changed on disk. Every case fails at validation (option parsing, the config's range checks, run
names, or the first file it opens), before any model is loaded; none needs an existing run folder
(the run-folder cases name folders that do not exist). Cases that need the data folder pass it as
an absolute path (``DATA``), so they work from any working directory; no case writes anything.
"""
from __future__ import annotations

from pathlib import Path

DATA = str(Path(__file__).resolve().parents[3] / "shared" / "data")   # /work/shared/data beside the repo

_LC = ["llm-check", "--quiet"]

CASES: list[tuple[str, list[str], str]] = [
    # option ranges (LLMCheckConfig.validate)
    ("llm-n-select-negative", _LC + ["--n-select", "-3"], "--n-select -3"),
    ("llm-n-heldout-zero", _LC + ["--n-heldout", "0"], "--n-heldout 0"),
    ("llm-typos-above-one", _LC + ["--typos", "2.0"], "--typos 2.0"),
    ("llm-typos-negative", _LC + ["--typos", "-0.1"], "--typos -0.1"),
    ("llm-typos-nan", _LC + ["--typos", "nan"], "--typos nan"),
    ("llm-tau-zero", _LC + ["--tau", "0"], "--tau 0.0"),
    ("llm-tau-inf", _LC + ["--tau", "inf"], "--tau inf"),
    ("llm-n-zero", _LC + ["--n", "0"], "--n 0"),
    ("llm-n-negative", _LC + ["--n", "-2"], "--n -2"),
    ("llm-seed-negative", _LC + ["--seed", "-1"], "--seed -1"),
    ("llm-limit-one", _LC + ["--limit", "1"], "--limit 1"),
    ("llm-start-negative", _LC + ["--start", "-5"], "--start -5"),
    ("llm-batch-size-zero", _LC + ["--batch-size", "0"], "--batch-size 0"),
    ("llm-probe-items-negative", _LC + ["--probe-items", "-1"], "--probe-items -1"),
    ("llm-retrieval-pool-zero", _LC + ["--retrieval-pool", "0"], "--retrieval-pool 0"),
    ("llm-retrieval-pool-below-n", _LC + ["--selection", "retrieved", "--retrieval-pool", "4"], "--retrieval-pool 4"),
    ("llm-max-tokens-zero", _LC + ["--max-tokens", "0"], "--max-tokens 0"),
    ("llm-encoding-unknown", _LC + ["--encoding", "klingon"], "--encoding 'klingon'"),
    ("llm-label-words-one", _LC + ["--label-words", "Bad"], "--label-words 'Bad'"),
    ("llm-label-words-repeated", _LC + ["--label-words", "Yes,Yes"], "--label-words 'Yes,Yes'"),
    ("llm-label-words-empty", _LC + ["--label-words", "A,,B"], "--label-words 'A,,B'"),
    ("llm-output-prefix-blank", _LC + ["--output-prefix", " "], "--output-prefix ' '"),
    ("llm-custom-without-file", _LC + ["--task", "custom"], "--task custom needs --train-file"),
    ("llm-train-file-builtin-task", _LC + ["--task", "sst2", "--train-file", "x.csv"], "--task 'sst2'"),
    # argparse
    ("llm-n-not-int", _LC + ["--n", "abc"], "'abc'"),
    ("llm-dtype-choice", _LC + ["--dtype", "float16"], "'float16'"),
    ("llm-selection-choice", _LC + ["--selection", "nearest"], "'nearest'"),
    ("llm-order-choice", _LC + ["--order", "sorted"], "'sorted'"),
    # run names and run folders (names are single path components; missing folders are named)
    ("llm-name-parent", _LC + ["--name", "../x"], "'../x'"),
    ("llm-name-empty", _LC + ["--name", ""], "''"),
    ("llm-name-slash", _LC + ["--name", "a/b"], "'a/b'"),
    ("llm-name-dot", _LC + ["--name", "."], "'.'"),
    ("llm-analyze-missing", _LC + ["--analyze-only", "--name", "nosuch-run"], "nosuch-run"),
    ("llm-summarize-missing", _LC + ["--summarize", "nosuch-run"], "nosuch-run"),
    ("llm-summarize-twice", _LC + ["--summarize", "a,a"], "'a,a'"),
    ("llm-summarize-escape", _LC + ["--summarize", "../x"], "'../x'"),
    ("llm-fixed-head-bad", _LC + ["--summarize", "a", "--fixed-head", "x,y"], "--fixed-head 'x,y'"),
    ("llm-fixed-head-alone", _LC + ["--fixed-head", "1,2"], "--fixed-head"),
    # data (the first file opened)
    ("llm-unknown-task", _LC + ["--task", "sst3", "--data-dir", DATA], "'sst3'"),
    ("llm-data-dir-missing", _LC + ["--data-dir", "/nonexistent-data"], "'/nonexistent-data'"),
    ("llm-train-file-missing", _LC + ["--task", "custom", "--train-file", "missing.csv"], "missing.csv"),
    ("llm-n-above-pool", _LC + ["--data-dir", DATA, "--n", "70000"], "--n 70000"),
    ("llm-start-beyond-items", _LC + ["--data-dir", DATA, "--start", "5000"], "--start 5000"),
    # model-info
    ("model-info-missing-model", ["model-info", "--model", "/no/such/model"], "'/no/such/model'"),
    ("model-info-max-new-tokens-zero", ["model-info", "--max-new-tokens", "0"], "--max-new-tokens 0"),
    ("model-info-dtype-choice", ["model-info", "--dtype", "float64"], "'float64'"),
]
