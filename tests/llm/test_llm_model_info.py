"""`icl-kernel model-info` on the committed tiny reference checkpoints (no torch needed)."""
from __future__ import annotations

import json
import pathlib

import pytest

from icl_kernel.cli import main

REF = pathlib.Path(__file__).resolve().parents[1] / "data" / "llm_ref"


@pytest.mark.parametrize("kind", ["llama", "gptj"])
def test_prints_config_parameter_count_and_load_time(kind, capsys):
    from safetensors.numpy import load_file

    folder = REF / f"tiny_{kind}"
    assert main(["model-info", "--model", str(folder)]) == 0
    out = capsys.readouterr().out
    raw = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    # parameter count from the checkpoint file itself (tied heads are stored once or skipped)
    expected = sum(v.size for k, v in state.items() if not (kind == "llama" and k == "lm_head.weight"))
    assert f"parameters: {expected:,}" in out
    assert f"architecture: {kind}" in out and "load time:" in out
    assert f"vocab_size: {raw['vocab_size']}" in out


def test_prompt_without_tokenizer_is_a_one_line_error(capsys):
    assert main(["model-info", "--model", str(REF / "tiny_llama"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tokenizer" in err
