"""Shard-by-shard loading keeps host memory at about one model copy: loading a float32
checkpoint as bfloat16 must not hold a second full copy (of either dtype) at any time."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import json, sys, threading, time
    import jax.numpy as jnp
    from llm_check.loading import load_model, parameter_count
    jnp.ones(3).block_until_ready()

    def rss_anon():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024

    peak = [0]
    stop = threading.Event()
    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_anon())
            time.sleep(0.002)
    base = rss_anon()
    t = threading.Thread(target=sample); t.start()
    lm = load_model(sys.argv[1], dtype="bfloat16")
    stop.set(); t.join()
    print(json.dumps({"peak_delta": peak[0] - base, "params": parameter_count(lm.model)}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_bf16_load_holds_one_copy(tmp_path):
    from flax import nnx

    from llm_check.loading.export import save_hf_folder
    from llm_check.models.llama import LlamaConfig, LlamaModel

    cfg = LlamaConfig(vocab_size=8000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                      num_attention_heads=16, num_key_value_heads=4, head_dim=64,
                      max_position_embeddings=128)
    model = LlamaModel(cfg, rngs=nnx.Rngs(0))
    save_hf_folder(model, tmp_path / "m", n_shards=3)
    del model
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "m")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    bf16_bytes = 2 * res["params"]
    largest_fp32 = 4 * cfg.vocab_size * cfg.hidden_size
    # one bf16 copy + a few per-tensor temporaries; a second full copy would add >= bf16_bytes
    assert res["peak_delta"] < bf16_bytes + 3 * largest_fp32, (res, bf16_bytes)
    assert res["peak_delta"] > 0.8 * bf16_bytes, res   # the sampler did see the model itself
