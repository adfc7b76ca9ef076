"""The prepared accelerator script runs end to end at tiny sizes (on CPU), so device time is not
spent discovering a broken script: both parts, the float64 agreement of the factorised and the
general forward, and a JSON whose numbers are finite and consistent with each other."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_gpu_smoke(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, ICL_KERNEL_CPU_DEVICES="2", ICL_KERNEL_JAX_CACHE="")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--smoke", "--impls", "einsum",
                           "--json", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["smoke"] and res["backend"] == "cpu" and res["nominal_bf16_peak"] is None
    assert [r["d"] for r in res["bayes"]] == [6, 16]
    for r in res["bayes"]:
        assert r["float64_ok"] and r["float64_max_rel_diff"] <= 1e-12
        assert r["devices"] == 2  # the batch is sharded over both CPU devices
        assert r["factorised_s"] > 0 and r["general_s"] > 0
    (t,) = res["train"]
    assert t["impl"] == "einsum" and t["parameters"] > 0 and t["step_tokens_per_s"] > 0
    assert t["compute_dtype"] == "float32"  # pretrain's CPU dtype (bf16 only on an accelerator)
    assert "d =    6" in proc.stdout and "attention einsum" in proc.stdout


def test_bench_gpu_rejects_bad_counts():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--prompts", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--prompts 0, expected an integer >= 1" in proc.stderr
