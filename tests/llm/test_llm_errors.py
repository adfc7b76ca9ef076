"""Bad input gives one typed, one-line error naming the problem (no torch needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx

from llm_check import errors
from llm_check.loading.export import save_gguf, save_hf_folder
from llm_check.models import forward
from llm_check.loading import load_model
from llm_check.models.gptj import GPTJConfig, GPTJModel
from llm_check.models.llama import LlamaConfig, LlamaModel

LLAMA = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                    max_position_embeddings=16, rope_theta=1e4)
GPTJ = GPTJConfig(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4, rotary_dim=4)


@pytest.fixture(scope="module")
def llama():
    return LlamaModel(LLAMA, rngs=nnx.Rngs(0))


@pytest.fixture
def folder(llama, tmp_path):
    return save_hf_folder(llama, tmp_path / "ckpt")


def _one_line(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg and isinstance(exc_info.value, ValueError)
    for n in needles:
        assert n in msg, msg


def _load_fails(path, exc_type, *needles, **load_kw):
    """load_model(path) raises one ``exc_type`` line holding every needle; returns the message."""
    with pytest.raises(exc_type) as e:
        load_model(str(path), **load_kw)
    _one_line(e, *needles)
    return str(e.value)


def _edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def _rewrite_weights(folder, edit):
    from safetensors.numpy import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))


def test_folder_without_config(folder):
    (folder / "config.json").unlink()
    _load_fails(folder, errors.ConfigError, "config.json")


def test_folder_without_weights(folder):
    (folder / "model.safetensors").unlink()
    _load_fails(folder, errors.CheckpointError, "model.safetensors")


@pytest.mark.parametrize("changes,exc,needles", [
    (dict(num_hidden_layers=3), errors.CheckpointError, ("model.layers.2.", "missing")),
    (dict(model_type="gptj", n_embd=32, n_layer=2, n_head=4, rotary_dim=4), errors.CheckpointError,
     ("unexpected tensor", "GPT-J")),
    (dict(model_type="gpt2"), errors.UnsupportedModelError, ("'gpt2'", "llama")),
    (dict(quantization_config={"quant_method": "bitsandbytes"}), errors.UnsupportedModelError, ("bitsandbytes",)),
    (dict(hidden_act="gelu"), errors.UnsupportedModelError, ("gelu", "silu")),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), errors.UnsupportedModelError, ("'yarn'",)),
], ids=["more-layers-than-weights", "another-architecture", "unsupported-architecture", "quantised",
        "unsupported-activation", "unsupported-rope-type"])
def test_bad_config(folder, changes, exc, needles):
    _edit_config(folder, **changes)
    _load_fails(folder, exc, *needles)


@pytest.mark.parametrize("changes,needles", [
    (dict(num_attention_heads=0), ("num_attention_heads=0", "integer >= 1")),
    (dict(num_attention_heads=[4]), ("num_attention_heads=[4]",)),
    (dict(hidden_size="32"), ('hidden_size="32"',)),
    (dict(vocab_size=49.5), ("vocab_size=49.5",)),
    (dict(num_hidden_layers=None), ("num_hidden_layers=null",)),
    (dict(rms_norm_eps=-1.0), ("rms_norm_eps=-1.0", "> 0")),
    (dict(rope_theta=float("nan")), ("rope_theta=NaN",)),
    (dict(num_key_value_heads=3), ("num_key_value_heads=3",)),
    (dict(rope_parameters=[1, 2]), ("rope_parameters",)),
], ids=["heads-zero", "heads-list", "width-string", "vocab-fraction", "layers-null", "eps-negative", "theta-nan",
        "kv-heads-not-dividing", "rope-not-object"])
def test_bad_config_values_one_line(folder, changes, needles):
    """Out-of-range or mistyped config values name the key and value, never a traceback."""
    _edit_config(folder, **changes)
    _load_fails(folder, errors.ConfigError, *needles)


def test_config_with_wrong_width(folder):
    _edit_config(folder, intermediate_size=64)
    msg = _load_fails(folder, errors.CheckpointError, "shape", "64")
    assert ("(32, 48)" if "down_proj" in msg else "(48, 32)") in msg, msg


@pytest.mark.parametrize("edit,needles", [
    (lambda s: s.pop("model.layers.1.mlp.up_proj.weight"), ("model.layers.1.mlp.up_proj.weight", "missing")),
    (lambda s: s.update({"model.layers.0.extra.weight": np.zeros(3, np.float32)}),
     ("model.layers.0.extra.weight", "unexpected")),
    (lambda s: s.update({"model.norm.weight": np.ones(31, np.float32)}), ("model.norm.weight", "(31,)", "(32,)")),
], ids=["missing-tensor", "unexpected-tensor", "wrong-shape"])
def test_bad_weights(folder, edit, needles):
    _rewrite_weights(folder, edit)
    _load_fails(folder, errors.CheckpointError, *needles)


def test_missing_shard(llama, tmp_path):
    folder = save_hf_folder(llama, tmp_path / "sharded", n_shards=3)
    next(folder.glob("model-00002-*.safetensors")).unlink()
    _load_fails(folder, errors.CheckpointError, "model-00002-of-00003.safetensors")


def test_unknown_model_name():
    _load_fails("no-such-model-anywhere", errors.ModelLoadError, "no-such-model-anywhere")


def test_bad_dtype(folder):
    _load_fails(folder, errors.UnsupportedModelError, "int8", dtype="int8")


def test_gguf_unsupported_quantisation(llama, tmp_path):
    import gguf

    bs, ts = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_1]
    raw = np.zeros((1, ts), dtype=np.uint8)
    path = save_gguf(llama, tmp_path / "q.gguf", extra_tensors={"blk.0.extra.weight": (raw, gguf.GGMLQuantizationType.Q8_1)})
    _load_fails(path, errors.UnsupportedModelError, "Q8_1", "blk.0.extra.weight")


def test_gguf_unsupported_architecture(llama, tmp_path):
    import gguf

    path = tmp_path / "other.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_tensor("x", np.zeros(4, np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    _load_fails(path, errors.UnsupportedModelError, "'mamba'")


def test_not_a_gguf(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"not a gguf file at all" * 10)
    _load_fails(path, errors.ModelLoadError, "junk.gguf")


@pytest.mark.parametrize("cfg,cls", [(LLAMA, LlamaModel), (GPTJ, GPTJModel)])
def test_prompt_longer_than_context(cfg, cls):
    model = cls(cfg, rngs=nnx.Rngs(1))
    with pytest.raises(errors.PromptTooLongError) as e:
        forward(model, np.zeros((1, 17), np.int32))
    _one_line(e, "17", "16")


@pytest.mark.parametrize("pos", [-1, 9, 100])
def test_capture_position_outside_sequence(llama, pos):
    with pytest.raises(errors.CapturePositionError) as e:
        forward(llama, np.zeros((2, 9), np.int32), capture_positions=[[0], [pos]])
    _one_line(e, str(pos), "item 1")


def test_capture_position_on_padding(llama):
    mask = np.array([[1] * 9, [1] * 5 + [0] * 4], bool)
    with pytest.raises(errors.CapturePositionError) as e:
        forward(llama, np.zeros((2, 9), np.int32), mask, capture_positions=[[8], [6]])
    _one_line(e, "6", "padding", "5 real tokens")


def test_capture_positions_wrong_batch(llama):
    with pytest.raises(errors.CapturePositionError) as e:
        forward(llama, np.zeros((2, 9), np.int32), capture_positions=np.zeros((3, 1), np.int32))
    _one_line(e, "(3, 1)")


def test_cli_reports_one_line_and_exit_2(tmp_path, capsys):
    from icl_kernel.cli import main

    assert main(["model-info", "--model", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err and err.startswith("icl-kernel model-info: error:")


def test_truncated_safetensors(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    _load_fails(folder, errors.CheckpointError, "model.safetensors", "outside the file")


def test_corrupt_bin_checkpoint(tmp_path, llama):
    pytest.importorskip("torch")
    folder = tmp_path / "bin"
    folder.mkdir()
    from llm_check.loading.export import hf_config_dict

    (folder / "config.json").write_text(json.dumps(hf_config_dict(LLAMA)))
    (folder / "pytorch_model.bin").write_bytes(b"\x00garbage" * 50)
    _load_fails(folder, errors.CheckpointError, "pytorch_model.bin", "not a loadable PyTorch checkpoint")


@pytest.mark.parametrize("bad", [-1, 50])
def test_token_id_outside_vocabulary(llama, bad):
    ids = np.zeros((1, 5), np.int32)
    ids[0, 2] = bad
    with pytest.raises(errors.InputError) as e:
        forward(llama, ids)
    _one_line(e, str(bad), "50")


@pytest.mark.parametrize("text,kind", [("[1, 2]", "array"), ('"llama"', "string"), ("42", "number"),
                                       ("null", "null")],
                         ids=["list", "string", "number", "null"])
def test_config_json_not_an_object(folder, text, kind):
    (folder / "config.json").write_text(text)
    _load_fails(folder, errors.ConfigError, "config.json", f"JSON {kind}", "expected a JSON object")


def test_config_json_not_utf8(folder):
    (folder / "config.json").write_bytes(b"\xff\xfe{}")
    _load_fails(folder, errors.ConfigError, "config.json", "expected a JSON object")


@pytest.mark.parametrize("changes,needles", [
    (dict(quantization_config=["gptq"]), ("quantised", '["gptq"]')),
    (dict(model_type="gptj", rope_parameters=[1]), ("rope_parameters=[1]", "JSON object")),
], ids=["quantisation-list", "gptj-rope-list"])
def test_nested_config_values_not_objects(folder, changes, needles):
    _edit_config(folder, **changes)
    with pytest.raises(errors.ModelLoadError) as e:
        load_model(str(folder))
    _one_line(e, *needles)


@pytest.mark.parametrize("text,needles", [
    ("[]", ("JSON array", "expected a JSON object")),
    ("7", ("JSON number", "expected a JSON object")),
    ("{not json", ("not valid JSON",)),
    ('{"weight_map": ["model-00001-of-00002.safetensors"]}', ("weight_map",)),
    ('{"weight_map": {"lm_head.weight": 3}}', ("weight_map",)),
], ids=["list", "number", "invalid", "map-is-list", "file-not-string"])
def test_sharded_index_not_an_object(llama, tmp_path, text, needles):
    folder = save_hf_folder(llama, tmp_path / "sharded", n_shards=2)
    (folder / "model.safetensors.index.json").write_text(text)
    _load_fails(folder, errors.CheckpointError, "model.safetensors.index.json", *needles)


@pytest.mark.parametrize("header,needles", [
    (b"[1, 2, 3]", ("JSON array", "expected a JSON object")),
    (b'{"model.norm.weight": [1, 2]}', ("'model.norm.weight'", "dtype, shape and data_offsets")),
], ids=["header-list", "entry-list"])
def test_safetensors_header_not_an_object(folder, header, needles):
    import struct

    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    _load_fails(folder, errors.CheckpointError, "model.safetensors", *needles)


def test_tokenizer_json_not_an_object(folder):
    (folder / "tokenizer.json").write_text("[1, 2]")
    _load_fails(folder, errors.TokenizerError, "tokenizer.json")
