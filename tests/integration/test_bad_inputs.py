"""Every subcommand refuses bad input the same way: exit 2, one line on stderr naming the value,
no traceback, and nothing created or changed on disk (a snapshot of the working folder before and
after each case).

The simulator's cases are listed here; the LLM commands' cases come from
``tests/integration/bad_inputs_llm.py`` (``CASES``) when it is present. Each case runs the real
dispatcher (``icl_kernel.cli.main``) in this process, in a workspace holding a small finished sweep
(``runs/ok``), a folder that is not a run (``mine/``), a run whose summary is corrupted
(``runs/corrupt``) and a few bad custom HMM files (``hmm/*.npz``). A handful of cases also run as
real subprocesses to check the exit status and stderr of the console script itself.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from icl_kernel.cli import main

TINY = ["-P", "num_tasks=2", "-P", "num_states=4", "-P", "num_tokens=6"]
SWEEP = ["sweep", *TINY, "--n", "1,2", "--seeds", "0", "--prompts", "4", "--length", "1", "-q",
         "--kernels", "belief"]


def sweep_with(*extra, name="x"):
    return [*SWEEP, "--name", name, *extra]


# (id, argv, substring the one-line error must contain)
SIM_CASES = [
    # sweep: values that argparse's types refuse
    ("sweep-n-negative", sweep_with("--n=-1,2"), "'-1,2' contains [-1]"),
    ("sweep-n-only-zero", sweep_with("--n", "0"), "at least one n >= 1"),
    ("sweep-prompt-law-han", sweep_with("--prompt-law", "ginc-id"), "needs --preset ginc"),
    ("sweep-ginc-params-han", sweep_with("--ginc-params", "reference"), "expected --preset ginc"),
    ("sweep-ginc-params-missing", ["sweep", "--preset", "ginc", "--ginc-params", "hmm/none.npz", "--name", "x", "-q"],
     "does not exist"),
    ("sweep-ginc-reference-2", ["sweep", "--preset", "ginc", "-P", "reference=2", "--name", "x", "-q"],
     "reference=2, expected 0 (draw) or 1"),
    ("sweep-ginc-prompt-law-unknown", ["sweep", "--preset", "ginc", "--prompt-law", "ginc-xx", "--name", "x", "-q"],
     "invalid choice: 'ginc-xx'"),
    ("sweep-ginc-params-folder", ["sweep", "--preset", "ginc", "--ginc-params", "mine", "--name", "x", "-q"],
     "expected ginc_reference.npz"),
    ("pretrain-ginc-reference-2", ["pretrain", "--preset", "ginc", "-P", "reference=2", "--name", "x", "-q"],
     "reference=2, expected 0 (draw) or 1"),
    ("sweep-ginc-labels", ["sweep", "--preset", "ginc", "--labels", "1,2", "--name", "x", "-q"],
     "GINC's labels are every symbol"),
    ("sweep-ginc-ood-task-kernel", ["sweep", "--preset", "ginc", "--prompt-law", "ginc-ood", "--kernels", "task",
                                    "--name", "x", "-q"], "kernel 'task' with prompt law 'ginc-ood'"),
    ("sweep-custom-ragged", ["sweep", "--preset", "custom", "--hmm-file", "hmm/ragged.json", "--name", "x"],
     "T is ragged (its rows have different lengths); expected a rectangular array of shape [d, d]"),
    ("sweep-n-text", sweep_with("--n", "a,b"), "'a,b' is not a comma-separated list"),
    ("sweep-n-empty", sweep_with("--n", ","), "is empty"),
    ("sweep-seeds-dup", sweep_with("--seeds", "1,1"), "'1,1' repeats a seed"),
    ("sweep-seeds-range", sweep_with("--seeds", "5:2"), "'5:2' is an empty range"),
    ("sweep-seeds-negative", sweep_with("--seeds", "-1"), "seeds must be >= 0"),
    ("sweep-prompts-zero", sweep_with("--prompts", "0"), "--prompts: 0"),
    ("sweep-prompts-text", sweep_with("--prompts", "many"), "'many' is not an integer"),
    ("sweep-length-zero", sweep_with("--length", "0"), "--length/-l: 0"),
    ("sweep-num-labels-zero", sweep_with("--num-labels", "0"), "--num-labels: 0"),
    ("sweep-chunk-zero", sweep_with("--chunk", "0"), "--chunk: 0"),
    ("sweep-devices-negative", sweep_with("--devices", "-3"), "-3 devices"),
    ("sweep-devices-huge", sweep_with("--devices", "100000"), "100000 devices"),
    ("sweep-save-predictions-negative", sweep_with("--save-predictions", "-1"), "--save-predictions: -1"),
    ("sweep-task-negative", sweep_with("--task", "-1"), "--task: -1"),
    ("sweep-dtype", sweep_with("--dtype", "float16"), "'float16'"),
    ("sweep-label-mode", sweep_with("--label-mode", "best"), "'best'"),
    ("sweep-preset", sweep_with("--preset", "gpt"), "'gpt'"),
    ("sweep-name-dotdot", [*SWEEP, "--name", "../x"], "'../x' is not a valid run name"),
    ("sweep-name-abs", [*SWEEP, "--name", "/tmp/abs"], "'/tmp/abs' is not a valid run name"),
    ("sweep-name-empty", [*SWEEP, "--name", ""], "'' is not a valid run name"),
    ("sweep-name-dot", [*SWEEP, "--name", "."], "'.' is not a valid run name"),
    ("sweep-param-no-eq", sweep_with("-P", "emit_conc"), "'emit_conc' is not KEY=VALUE"),
    ("sweep-param-nan", sweep_with("-P", "emit_conc=nan"), "'nan', expected a finite number"),
    ("sweep-param-inf", sweep_with("-P", "emit_conc=inf"), "'inf', expected a finite number"),
    ("sweep-param-text", sweep_with("-P", "emit_conc=abc"), "'abc' is not a number"),
    ("sweep-kernels-empty", sweep_with("--kernels", " "), "names no kernel"),
    ("sweep-kernels-dup", sweep_with("--kernels", "belief belief"), "repeats ['belief']"),
    ("sweep-kernels-unknown", sweep_with("--kernels", "nosuch"), "unknown kernel 'nosuch'"),
    ("sweep-beta-nan", sweep_with("--kernels", "belief:beta=nan"), "beta=nan"),
    ("sweep-beta-inf", sweep_with("--kernels", "belief:beta=inf"), "beta=inf"),
    ("sweep-beta-negative", sweep_with("--kernels", "belief:beta=-1"), "beta=-1"),
    ("sweep-beta-on-gram", sweep_with("--kernels", "gram:beta=2"), "not to 'gram'"),
    ("sweep-kernel-option", sweep_with("--kernels", "belief:width=2"), "bad kernel option 'width=2'"),
    # sweep: values the library refuses after parsing (still before anything is written)
    ("sweep-param-twice", sweep_with("-P", "num_tasks=4"), "'num_tasks' is given twice"),
    ("sweep-param-fraction", sweep_with("-P", "seed=1.5"), "seed=1.5, expected an integer"),
    ("sweep-param-unknown", sweep_with("-P", "bogus=1"), "unknown han parameter(s) ['bogus']"),
    ("sweep-param-negative", sweep_with("-P", "emit_conc=-1"), "emit_conc=-1.0"),
    ("sweep-labels-delim", sweep_with("--labels", "0"), "label 0 is the delimiter"),
    ("sweep-labels-vocab", sweep_with("--labels", "99"), "label 99 is outside the vocabulary"),
    ("sweep-labels-dup", sweep_with("--labels", "1,1"), "labels [1, 1] contain duplicates"),
    ("sweep-num-labels-big", sweep_with("--num-labels", "50"), "num_labels 50 exceeds"),
    ("sweep-task-big", sweep_with("--task", "9"), "task 9 is outside 0..1"),
    ("sweep-gram-singular", sweep_with("--kernels", "gram:rtol=0"), "singular"),
    ("sweep-hmm-file-han", sweep_with("--hmm-file", "hmm/ok.npz"), "--hmm-file hmm/ok.npz is given with preset 'han'"),
    ("sweep-custom-no-file", ["sweep", "--preset", "custom", "--name", "x", "-q"], "needs a file"),
    ("sweep-custom-missing", ["sweep", "--preset", "custom", "--hmm-file", "hmm/none.npz", "--name", "x"],
     "hmm/none.npz does not exist"),
    ("sweep-custom-complex", ["sweep", "--preset", "custom", "--hmm-file", "hmm/complex.npz", "--name", "x"],
     "T has complex entries"),
    ("sweep-custom-frac-delim", ["sweep", "--preset", "custom", "--hmm-file", "hmm/fracdelim.npz", "--name", "x"],
     "delimiter 0.5 is not an integer"),
    ("sweep-custom-no-delim", ["sweep", "--preset", "custom", "--hmm-file", "hmm/nodelim.npz", "--name", "x"],
     "task 0 cannot produce a demonstration"),
    ("sweep-custom-no-label", ["sweep", "--preset", "custom", "--hmm-file", "hmm/nolabel.npz", "--labels", "2",
                               "--name", "x", "--length", "1"], "task 0 cannot produce a demonstration"),
    ("sweep-custom-corrupt", ["sweep", "--preset", "custom", "--hmm-file", "hmm/corrupt.npz", "--name", "x"],
     "cannot read custom HMM file"),
    ("sweep-custom-params", ["sweep", "--preset", "custom", "--hmm-file", "hmm/ok.npz", "-P", "seed=1", "--name", "x"],
     "do not apply to a custom HMM"),
    ("sweep-runs-dir-unwritable", [*SWEEP, "--runs-dir", "/proc/icl-kernel", "--name", "x"], "cannot create"),
    ("sweep-foreign-folder", [*SWEEP, "--runs-dir", ".", "--name", "mine"], "not an icl-kernel run folder"),
    ("sweep-foreign-folder-overwrite", [*SWEEP, "--runs-dir", ".", "--name", "mine", "--overwrite"],
     "not an icl-kernel run folder"),
    ("sweep-other-config", [*SWEEP[:-2], "--kernels", "predictive", "--name", "ok"], "another config"),
    ("sweep-overwrite-typo", [*SWEEP[:-2], "--kernels", "belief:beta=x", "--name", "ok", "--overwrite"],
     "beta='x' is not a number"),
    # plot
    ("plot-missing", ["plot", "runs/none"], "runs/none not found"),
    ("plot-foreign", ["plot", "mine"], "no .icl-kernel-run marker"),
    ("plot-kernels", ["plot", "runs/ok", "--kernels", "nosuch", "--out", "f.png"], "['nosuch'] not in this run"),
    ("plot-no-bound", ["plot", "runs/ok", "--bound", "--out", "f.png"], "bound.json not found"),
    ("plot-out-unwritable", ["plot", "runs/ok", "--out", "/proc/icl-kernel/f.png"], "cannot write"),
    ("plot-corrupt-summary", ["plot", "runs/corrupt", "--out", "f.png"], "summary.json is corrupted"),
    # bound
    ("bound-delta-zero", ["bound", "runs/ok", "--delta-k", "0"], "expected a probability in (0, 1)"),
    ("bound-delta-big", ["bound", "runs/ok", "--delta-b", "1.5"], "expected a probability in (0, 1)"),
    ("bound-delta-nan", ["bound", "runs/ok", "--delta-b", "nan"], "expected a finite number"),
    ("bound-prompts-zero", ["bound", "runs/ok", "--prompts", "0"], "--prompts: 0"),
    ("bound-mc-demos-zero", ["bound", "--mc-demos", "0"], "--mc-demos: 0"),
    ("bound-n-zero", ["bound", "--n", "0"], "'0' contains [0]"),
    ("bound-missing", ["bound", "runs/none"], "runs/none not found"),
    ("bound-foreign", ["bound", "mine"], "no .icl-kernel-run marker"),
    ("bound-out-dir-missing", ["bound", "runs/ok", "--out", "nowhere/b.json", "--prompts", "1"],
     "folder nowhere does not exist"),
    ("bound-beta", ["bound", *TINY, "--kernels", "belief:beta=-2"], "beta=-2"),
    # phenomena
    ("phenomena-kind", ["phenomena", "nosuch"], "'nosuch'"),
    ("phenomena-name", ["phenomena", "labels", "--name", "../p"], "'../p' is not a valid run name"),
    ("phenomena-prompts", ["phenomena", "labels", "--prompts", "0"], "--prompts: 0"),
    ("phenomena-seeds", ["phenomena", "ood", "--seeds", "2,2"], "repeats a seed"),
    ("phenomena-param", ["phenomena", "ood", "-P", "emit_conc=nan"], "expected a finite number"),
    # pretrain
    ("pretrain-steps-zero", ["pretrain", *TINY, "--steps", "0"], "--steps: 0"),
    ("pretrain-steps-negative", ["pretrain", *TINY, "--steps", "-5"], "--steps: -5"),
    ("pretrain-heads", ["pretrain", *TINY, "--n-embd", "30", "--n-head", "4"], "30"),
    ("pretrain-batch", ["pretrain", *TINY, "--batch-size", "0"], "--batch-size: 0"),
    ("pretrain-lr", ["pretrain", *TINY, "--lr", "nan"], "nan"),
    ("pretrain-name", ["pretrain", *TINY, "--name", "../p"], "'../p' is not a valid run name"),
    ("pretrain-param", ["pretrain", "-P", "emit_conc=inf"], "expected a finite number"),
    ("pretrain-foreign", ["pretrain", *TINY, "--runs-dir", ".", "--name", "mine"], "not an icl-kernel run folder"),
    # transformer-check
    ("tc-missing-model", ["transformer-check", "runs/none", "runs/ok"], "runs/none not found"),
    ("tc-foreign-model", ["transformer-check", "mine", "runs/ok"], "no .icl-kernel-run marker"),
    ("tc-sweep-as-model", ["transformer-check", "runs/ok", "runs/ok"], "made by `sweep`"),
    ("tc-chunk", ["transformer-check", "runs/ok", "runs/ok", "--chunk", "0"], "--chunk: 0"),
    ("tc-name", ["transformer-check", "runs/ok", "runs/ok", "--name", "/abs"], "'/abs' is not a valid run name"),
]


def _llm_cases():
    path = Path(__file__).with_name("bad_inputs_llm.py")
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location("bad_inputs_llm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return list(mod.CASES)


CASES = SIM_CASES + _llm_cases()


def snapshot(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        for d in dirnames:
            p = Path(dirpath) / d
            out[str(p.relative_to(root)) + "/"] = oct(p.stat().st_mode)
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), oct(p.stat().st_mode))
    return out


def _custom_files(folder: Path) -> None:
    from simulate.presets import build_preset

    folder.mkdir()
    h = build_preset("han", dict(num_tasks=2, num_states=4, num_tokens=5))
    base = dict(T=h.T, B=h.B, delim=0, task_of_state=h.task_of_state, starts=[0, 2])
    np.savez(folder / "ok.npz", **base)
    np.savez(folder / "complex.npz", **dict(base, T=h.T.astype(complex)))
    np.savez(folder / "fracdelim.npz", **dict(base, delim=0.5))
    rest = h.B[:, 1:] / h.B[:, 1:].sum(1, keepdims=True)
    np.savez(folder / "nodelim.npz", **dict(base, B=np.concatenate([np.zeros((4, 1)), rest], 1)))
    w = np.linspace(0.05, 0.3, 4)[:, None]
    np.savez(folder / "varydelim.npz", **dict(base, B=np.concatenate([w, rest * (1 - w)], 1)))
    # task 0's states never emit token 2: with l = 1, no x of task 0 is followed by label 2
    B = h.B.copy()
    B[:2, 1] += B[:2, 2]
    B[:2, 2] = 0.0
    np.savez(folder / "nolabel.npz", **dict(base, B=B))
    (folder / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (folder / "ragged.json").write_text('{"T": [[0.5, 0.5], [1.0]], "B": [[0.5, 0.5], [0.5, 0.5]], "delim": 0}')


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main([*SWEEP, "--name", "ok"]) == 0
        shutil.copytree(root / "runs" / "ok", root / "runs" / "corrupt")
        (root / "runs" / "corrupt" / "summary.json").write_text("{ truncated")
        (root / "mine").mkdir()
        (root / "mine" / "thesis.tex").write_text("precious")
        _custom_files(root / "hmm")
    finally:
        os.chdir(cwd)
    return root


def test_enough_cases():
    assert len(CASES) >= 60, len(CASES)
    assert len({c[0] for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize("case_id,argv,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_refused(workspace, monkeypatch, capsys, case_id, argv, needle):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    rc = main(list(argv))
    err = capsys.readouterr().err
    assert rc == 2, f"{case_id}: exit {rc}, stderr {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{case_id}: stderr has {len(lines)} lines: {err!r}"
    assert "Traceback" not in err and needle in lines[0], f"{case_id}: {lines[0]!r} lacks {needle!r}"
    assert snapshot(workspace) == before, f"{case_id}: the working folder changed"


@pytest.mark.parametrize("argv,needle", [
    (["sweep", "--n=-1"], "contains [-1]"),
    (["sweep", "--name", "../x"], "not a valid run name"),
    (["plot", "runs/none"], "not found"),
])
def test_console_script_exit_code(tmp_path, argv, needle):
    """The installed console script itself: exit status 2 and one stderr line (no Python traceback)."""
    exe = Path(sys.executable).with_name("icl-kernel")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "icl_kernel.cli"]
    r = subprocess.run(cmd + argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
