"""kernelkit convert on a tiny random llama: output format, sharding, resume, overwrite and every bad input."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from tiny_llama import CONFIG, write_tiny_llama

from kernelkit.cli import main
from kernelkit.convert import ConvertError, convert
from kernelkit.convert import run as convert_run
from kernelkit.quant import SchemeError
from kernelkit.quant.fp8_block.format import dequantize_weight


def _load_all(path):
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out |= {k: h.get_tensor(k) for k in h.keys()}
    return out


@pytest.fixture
def src(tmp_path):
    tensors = write_tiny_llama(tmp_path / "src")
    return tmp_path / "src", tensors


def test_fp8_block_conversion(src, tmp_path):
    path, tensors = src
    out = convert(path, tmp_path / "dst", scheme_options={"block_size": (128, 128)}, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128],
        "modules_to_not_convert": ["lm_head", "embed_tokens"]}
    assert config["torch_dtype"] == "bfloat16" and (out / "generation_config.json").is_file()
    got = _load_all(out)
    q, s = got["model.layers.0.mlp.down_proj.weight"], got["model.layers.0.mlp.down_proj.weight_scale_inv"]
    assert q.dtype == torch.float8_e4m3fn and q.shape == (192, 320) and s.shape == (2, 3)
    w = tensors["model.layers.0.mlp.down_proj.weight"].float()
    err = (dequantize_weight(q, s) - w).abs().max() / w.abs().max()
    assert err < 2**-4  # within FP8 e4m3 rounding (3 mantissa bits)
    assert got["lm_head.weight"].dtype == torch.bfloat16
    assert torch.equal(got["lm_head.weight"], tensors["lm_head.weight"])
    assert torch.equal(got["model.embed_tokens.weight"], tensors["model.embed_tokens.weight"])
    assert not list(tmp_path.glob(".dst.partial"))
    assert (out / "model.safetensors").stat().st_mode & 0o777 == (out / "config.json").stat().st_mode & 0o777


def test_sharded_output_and_index(src, tmp_path):
    out = convert(src[0], tmp_path / "dst", max_shard_size=60_000, progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(files) > 2 and sorted(set(index["weight_map"].values())) == files
    assert set(index["weight_map"]) == set(_load_all(out))
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in _load_all(out).values())


def test_dry_run_writes_nothing(src, tmp_path):
    plan = convert(src[0], tmp_path / "dst", dry_run=True)
    actions = [t.action for t in plan.tensors]
    assert actions.count("quantize") == 14 and actions.count("cast") == 7
    assert plan.out_bytes < plan.in_bytes and not (tmp_path / "dst").exists()


def test_scheme_none_and_ignore(src, tmp_path):
    plain = _load_all(convert(src[0], tmp_path / "plain", "none", dtype="fp32", progress=False))
    assert all(t.dtype == torch.float32 for t in plain.values()) and len(plain) == len(src[1])
    out = convert(src[0], tmp_path / "ignored", ignore=[r"layers\.1\.mlp"], progress=False)
    got = _load_all(out)
    assert got["model.layers.1.mlp.up_proj.weight"].dtype == torch.bfloat16
    assert got["model.layers.0.mlp.up_proj.weight"].dtype == torch.float8_e4m3fn
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert "model.layers.1.mlp.gate_proj" in cfg["modules_to_not_convert"]


def test_interrupted_convert_leaves_dst_untouched_and_resumes(src, tmp_path, monkeypatch):
    from safetensors.torch import save_file as real_save

    calls, fail = [], [True]

    def failing_save(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 3 and fail[0]:
            raise OSError("No space left on device")  # the run dies while writing its third shard
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr("safetensors.torch.save_file", failing_save)
    with pytest.raises(OSError, match="No space left"):
        convert(src[0], tmp_path / "dst", max_shard_size=60_000, progress=False)
    assert not (tmp_path / "dst").exists() and (tmp_path / ".dst.partial").is_dir()
    calls.clear()
    fail[0] = False
    out = convert(src[0], tmp_path / "dst", max_shard_size=60_000, resume=True, progress=False)
    fresh = convert(src[0], tmp_path / "fresh", max_shard_size=60_000, progress=False)
    total = len(list(fresh.glob("model-*.safetensors")))
    assert len(calls) == 2 * total - 2  # the resumed run wrote only the shards the first run had not finished
    a, b = _load_all(out), _load_all(fresh)
    assert a.keys() == b.keys() and all(torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8))
                                        if a[k].dtype == torch.float8_e4m3fn else torch.equal(a[k], b[k]) for k in a)


def test_default_block_size_fits_the_model(src, tmp_path):
    """hidden 192 and intermediate 320 are not whole 128-blocks: the default picks 64 x 64, which every peer
    loads."""
    out = convert(src[0], tmp_path / "dst", progress=False)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["weight_block_size"] == [64, 64]
    assert _load_all(out)["model.layers.0.mlp.down_proj.weight_scale_inv"].shape == (3, 5)


def test_existing_dst_needs_overwrite(src, tmp_path):
    dst = tmp_path / "dst"
    convert(src[0], dst, progress=False)
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(ConvertError, match="exists; pass --overwrite"):
        convert(src[0], dst, progress=False)
    assert (dst / "keep.txt").read_text() == "mine"
    convert(src[0], dst, overwrite=True, progress=False)  # a checkpoint: replaced whole
    assert not (dst / "keep.txt").exists() and (dst / "config.json").is_file()


def test_overwrite_never_deletes_what_is_not_a_checkpoint(src, tmp_path):
    dst = tmp_path / "notes"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(ConvertError, match="not a checkpoint"):
        convert(src[0], dst, overwrite=True, progress=False)
    assert (dst / "keep.txt").read_text() == "mine" and not (tmp_path / ".notes.partial").exists()
    (tmp_path / "empty").mkdir()
    assert convert(src[0], tmp_path / "empty", overwrite=True, progress=False) == tmp_path / "empty"


@pytest.mark.parametrize("where", ["parent", "same"])
def test_dst_that_contains_src_is_refused(tmp_path, where):
    model = tmp_path / "models" / "tiny"
    write_tiny_llama(model)
    (tmp_path / "models" / "other.txt").write_text("unrelated")
    dst = tmp_path / "models" if where == "parent" else model
    before = sorted(p.name for p in model.iterdir())
    with pytest.raises(ConvertError, match="contains the source"):
        convert(model, dst, overwrite=True, progress=False)
    assert sorted(p.name for p in model.iterdir()) == before
    assert (tmp_path / "models" / "other.txt").read_text() == "unrelated"


def test_resume_refuses_a_source_that_changed(src, tmp_path, monkeypatch):
    from safetensors.torch import save_file as real_save

    def dies_on_second_shard(tensors, path, metadata=None):
        if "00002" in str(path):
            raise OSError("killed")
        real_save(tensors, path, metadata=metadata)

    with monkeypatch.context() as m:
        m.setattr("safetensors.torch.save_file", dies_on_second_shard)
        with pytest.raises(OSError):
            convert(src[0], tmp_path / "dst", max_shard_size=60_000, progress=False)
    with pytest.raises(ConvertError, match="other options"):
        convert(src[0], tmp_path / "dst", "none", max_shard_size=60_000, resume=True, progress=False)
    shard = sorted(src[0].glob("model-*.safetensors"))[1]
    with safe_open(str(shard), framework="pt") as h:
        changed = {k: h.get_tensor(k) * 2 for k in h.keys()}  # new weights, same shapes and names
    from safetensors.torch import save_file

    save_file(changed, str(shard))
    with pytest.raises(ConvertError, match=rf"source changed since that run \({shard.name}\)"):
        convert(src[0], tmp_path / "dst", max_shard_size=60_000, resume=True, progress=False)
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("layers, match", [
    (3, r"describes tensors the checkpoint does not have: 9 missing, e.g. \['model.layers.2.input_layernorm"),
    (1, r"layers 1..1 beyond config.json's num_hidden_layers=1"),
])
def test_layer_count_must_match_the_tensors(src, tmp_path, layers, match):
    (src[0] / "config.json").write_text(json.dumps(dict(CONFIG, num_hidden_layers=layers)))
    with pytest.raises(ConvertError, match=match):
        convert(src[0], tmp_path / "dst", progress=False)
    assert not (tmp_path / "dst").exists() and not (tmp_path / ".dst.partial").exists()


def _break(path, how):
    shards = sorted(path.glob("model-*.safetensors"))
    if how == "truncated":
        data = shards[0].read_bytes()
        shards[0].write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        shards[0].write_bytes(b"\x00" * 64)
    elif how == "missing shard":
        shards[1].unlink()
    elif how == "shape":
        cfg = dict(CONFIG, intermediate_size=384)
        (path / "config.json").write_text(json.dumps(cfg))
    elif how == "already quantized":
        (path / "config.json").write_text(json.dumps(dict(CONFIG, quantization_config={"quant_method": "fp8"})))


@pytest.mark.parametrize("how, match", [
    ("truncated", r"model-00001-of-00002.safetensors: corrupt or truncated"),
    ("garbage", r"model-00001-of-00002.safetensors: corrupt or truncated"),
    ("missing shard", r"names shards that do not exist: \['model-00002-of-00002.safetensors'\]"),
    ("shape", r"safetensors: tensor model.layers.0.mlp.\w+_proj.weight has shape \[.*\] but config.json implies"),
    ("already quantized", r"already quantized .*quant_method='fp8'"),
])
def test_bad_inputs_name_the_problem_and_write_nothing(src, tmp_path, how, match):
    _break(src[0], how)
    with pytest.raises(ConvertError, match=match):
        convert(src[0], tmp_path / "dst", progress=False)
    assert not (tmp_path / "dst").exists()


def test_nonfinite_weights(tmp_path):
    tensors = write_tiny_llama(tmp_path / "src", shards=1)
    tensors["model.layers.1.self_attn.o_proj.weight"][3, 4] = float("nan")
    from safetensors.torch import save_file

    save_file(tensors, str(tmp_path / "src" / "model.safetensors"))
    with pytest.raises(ConvertError, match=r"tensor model.layers.1.self_attn.o_proj.weight has 1 NaN/Inf values"):
        convert(tmp_path / "src", tmp_path / "dst", progress=False)
    assert not (tmp_path / "dst").exists() and not (tmp_path / ".dst.partial").exists()  # nothing to resume
    convert(tmp_path / "src", tmp_path / "dst", allow_nonfinite=True, progress=False)


def test_converting_a_converted_checkpoint_is_refused(src, tmp_path):
    out = convert(src[0], tmp_path / "dst", progress=False)
    with pytest.raises(ConvertError, match="already quantized"):
        convert(out, tmp_path / "again", progress=False)


def test_unsupported_gguf_architecture(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "gpt2")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 8).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ConvertError, match="GGUF architecture 'gpt2' is not supported"):
        convert(tmp_path / "m.gguf", tmp_path / "dst", progress=False)


def test_scheme_errors(src, tmp_path):
    with pytest.raises(SchemeError, match="unknown quantization scheme 'int3'"):
        convert(src[0], tmp_path / "dst", "int3", progress=False)
    with pytest.raises(ConvertError, match="does not take these options"):
        convert(src[0], tmp_path / "dst", "fp8-block", scheme_options={"bits": 4}, progress=False)


def test_cli(src, tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["convert", str(src[0]), str(tmp_path / "dst"), "--dry-run"], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "quantize" in out.output and "shard(s)" in out.output
    out = runner.invoke(main, ["convert", str(src[0]), str(tmp_path / "dst"), "--block-size", "64,64",
                               "--max-shard-size", "100kB"])
    assert out.exit_code == 0, out.output
    cfg = json.loads((tmp_path / "dst" / "config.json").read_text())
    assert cfg["quantization_config"]["weight_block_size"] == [64, 64]
    out = runner.invoke(main, ["convert", str(src[0]), str(tmp_path / "dst")])
    assert out.exit_code == 1 and "exists; pass --overwrite" in out.output
    out = runner.invoke(main, ["convert", str(src[0]), str(tmp_path / "x"), "--max-shard-size", "lots"])
    assert out.exit_code == 2 and "not a size" in out.output


def test_parse_size():
    from kernelkit.cli.convert import parse_size

    assert parse_size("1GB") == 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("512") == 512
    assert convert_run.DTYPES["bf16"] is torch.bfloat16


def test_scheme_extra_files_are_written(src, tmp_path):
    from kernelkit.quant.fp8_block.scheme import Fp8BlockScheme

    class WithDescription(Fp8BlockScheme):
        def extra_files(self, outputs):
            return {"quant_model_description.json": json.dumps({"model_quant_type": "example", "n": len(outputs)})}

    out = convert(src[0], tmp_path / "dst", WithDescription(), progress=False)
    n = sum(len(t.outputs) for t in convert(src[0], tmp_path / "plan", WithDescription(), dry_run=True).tensors)
    assert json.loads((out / "quant_model_description.json").read_text()) == {"model_quant_type": "example", "n": n}


@pytest.mark.parametrize("args, message", [
    (["--block-size", "0,0"], "two positive integers"),
    (["--block-size", "128"], "two positive integers"),
    (["--block-size", "-1,-1"], "two positive integers"),
    (["--ignore", "("], "--ignore '(' is not a regular expression"),
    (["config: list"], "expected a JSON object"),
    (["config: no intermediate_size"], "'intermediate_size' must be a positive integer"),
    (["dst: under a file"], "cannot write the output next to"),
])
def test_cli_errors_are_one_line(src, tmp_path, args, message):
    dst = tmp_path / "dst"
    if args == ["config: list"]:
        (src[0] / "config.json").write_text("[1, 2]")
        args = []
    elif args == ["config: no intermediate_size"]:
        (src[0] / "config.json").write_text(json.dumps({k: v for k, v in CONFIG.items() if k != "intermediate_size"}))
        args = []
    elif args == ["dst: under a file"]:
        (tmp_path / "afile").write_text("")
        dst, args = tmp_path / "afile" / "dst", []
    out = CliRunner().invoke(main, ["convert", str(src[0]), str(dst), *args])
    assert out.exit_code == 1 and out.exception.__class__ is SystemExit, out.output
    assert message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1, out.output
