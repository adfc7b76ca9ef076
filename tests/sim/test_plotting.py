"""Figures are a pure function of a run's numbers at display precision: plotting twice gives the
same PNG bytes, and float rounding noise in the numbers (last-bit differences between machines
or equivalent code paths) does not change the bytes, though Agg alone would turn it into pixels."""
import math

import numpy as np
import pytest

import simulate.plotting as plotting
from icl_kernel.cli import main

SMALL = ["-P", "num_tasks=2", "-P", "num_states=6", "-P", "num_tokens=8", "--n", "1,2,4,8", "--seeds", "0",
         "--prompts", "12", "--length", "2", "--quiet", "--kernels", "predictive belief:beta=5 gram"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["sweep", "--runs-dir", str(runs), "--name", "small", *SMALL]) == 0
    return runs / "small"


def _noisy_copy(d, rel, rng):
    """``d`` with every float multiplied by (1 + rel * N(0, 1)), as another machine's run would differ."""
    if isinstance(d, dict):
        return {k: _noisy_copy(v, rel, rng) for k, v in d.items()}
    if isinstance(d, list):
        return [_noisy_copy(v, rel, rng) for v in d]
    return d * (1 + rel * rng.standard_normal()) if isinstance(d, float) else d


def _png(run, out, monkeypatch, rel=0.0, digits=plotting.DISPLAY_DIGITS):
    """The figure's bytes with the run's numbers perturbed by ``rel`` and rounded to ``digits``."""
    original = plotting.read_summary
    with monkeypatch.context() as m:
        m.setattr(plotting, "read_summary", lambda p: _noisy_copy(original(p), rel, np.random.default_rng(1)))
        m.setattr(plotting.for_display, "__defaults__", (digits,))
        plotting.plot_convergence(run, out)
    return out.read_bytes()


def test_for_display_rounds_floats_only():
    got = plotting.for_display({"a": [0.123456789, 7, True, "x"], "b": float("nan"), "c": float("inf"), "d": 2.0e-9})
    assert got["a"] == [0.1235, 7, True, "x"] and math.isnan(got["b"]) and got["c"] == math.inf and got["d"] == 2e-9
    assert type(got["a"][1]) is int and type(got["a"][2]) is bool


def test_same_run_same_bytes(run, tmp_path, monkeypatch):
    assert _png(run, tmp_path / "a.png", monkeypatch) == _png(run, tmp_path / "b.png", monkeypatch)


def test_rounding_noise_does_not_change_bytes(run, tmp_path, monkeypatch):
    # 1e-9 relative: above the differences measured between two code versions of the default sweep
    # (2.4e-9), far below the 4 displayed digits
    clean = _png(run, tmp_path / "clean.png", monkeypatch)
    assert _png(run, tmp_path / "noisy.png", monkeypatch, rel=1e-9) == clean
    # without the display rounding the same noise changes the bytes: the rounding is what holds them
    raw = _png(run, tmp_path / "raw.png", monkeypatch, digits=17)
    assert _png(run, tmp_path / "raw_noisy.png", monkeypatch, rel=1e-9, digits=17) != raw
