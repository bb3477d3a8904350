"""Block-FP8 GEMM: the reference against float64, the Triton kernel (interpreter without a GPU) against the
reference, and the op's argument checks."""

import json

import pytest
import torch

from kernelkit.ops import per_token_group_quant_fp8, w8a8_block_fp8_matmul
from kernelkit.ops.gemm import configs, reference, triton_impl
from kernelkit.quant.fp8_block.format import quantize_weight

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _operands(m, n, k, block=(128, 128), seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g) * 0.05
    pad = -k % block[1]
    xq, xs = per_token_group_quant_fp8(torch.nn.functional.pad(x, (0, pad)), block[1], column_major_scales=True)
    wq, ws = quantize_weight(w, block)
    return [t.to(device) for t in (xq[:, :k], wq, xs, ws)], x, w


def test_reference_matches_float64():
    (a, b, a_s, b_s), _, _ = _operands(9, 200, 300)
    out = reference.w8a8_block_fp8_matmul_ref(a, b, a_s, b_s, (128, 128), torch.float32)
    a64 = a.double() * a_s.double().repeat_interleave(128, 1)[:, :300]
    b64 = b.double() * b_s.double().repeat_interleave(128, 0)[:200].repeat_interleave(128, 1)[:, :300]
    torch.testing.assert_close(out.double(), a64 @ b64.t(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m, n, k", [(1, 128, 128), (7, 200, 576), (33, 256, 384), (0, 64, 128)])
@pytest.mark.parametrize("block", [(128, 128), (64, 64)])
@pytest.mark.parametrize("split_k", [1, 4])  # 4 splits of 576 / 128 = 5 blocks: [0, 2), [2, 4), [4, 5), empty
def test_triton_matches_reference(m, n, k, block, split_k):
    (a, b, a_s, b_s), _, _ = _operands(m, n, k, block, seed=m + n, device=DEVICE)
    out = torch.full((m, n), float("nan"), dtype=torch.float32, device=DEVICE)
    config = configs.default_config(m, n, k, block) | {"BLOCK_SIZE_N": 64, "num_stages": 1, "SPLIT_K": split_k}
    triton_impl.w8a8_block_fp8_matmul(a, b, a_s, b_s, block, out, config)
    ref = reference.w8a8_block_fp8_matmul_ref(a, b, a_s, b_s, block, torch.float32).cpu()
    assert not out.isnan().any()
    if DEVICE == "cpu":
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    else:  # Hopper's FP8 wgmma accumulates with ~14 mantissa bits within each K block (DeepSeek-V3, sec. 3.3.2)
        assert out.shape == ref.shape and (m == 0 or ((out.cpu() - ref).norm() / ref.norm()).item() < 2e-3)


def test_op_on_cpu_and_bf16_output():
    (a, b, a_s, b_s), x, w = _operands(5, 96, 256)
    out = w8a8_block_fp8_matmul(a, b, a_s, b_s, [128, 128], torch.bfloat16)
    assert out.shape == (5, 96) and out.dtype == torch.bfloat16
    exact = x @ w.t()
    assert ((out.float() - exact).norm() / exact.norm()).item() < 0.05  # FP8 rounding of both operands


@pytest.mark.parametrize("change, error, match", [
    (lambda ops: (ops[0].float(), *ops[1:]), TypeError, "float8_e4m3fn"),
    (lambda ops: (ops[0][:, :100], *ops[1:]), ValueError, "same K"),
    (lambda ops: (ops[0], ops[1], ops[2][:, :1], ops[3]), ValueError, "As must be float32"),
    (lambda ops: (ops[0], ops[1], ops[2], ops[3].double()), ValueError, "Bs must be float32"),
])
def test_bad_arguments(change, error, match):
    ops_, _, _ = _operands(4, 128, 256)
    with pytest.raises(error, match=match):
        w8a8_block_fp8_matmul(*change(ops_), [128, 128])
    with pytest.raises(ValueError, match="output_dtype"):
        w8a8_block_fp8_matmul(*ops_, [128, 128], torch.int8)


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    """An empty config directory in place of the shipped one; lookups cached from either never leak."""
    monkeypatch.setattr(configs, "CONFIG_DIR", tmp_path)
    _clear_config_caches()
    yield tmp_path
    _clear_config_caches()


def _clear_config_caches():
    for cached in (configs._load, configs.get_config, configs.faster_than_cublas):
        cached.cache_clear()


def test_config_lookup(config_dir):
    assert configs.get_config(16, 4096, 4096, "NVIDIA H200", (128, 128)) == \
        configs.default_config(16, 4096, 4096, (128, 128))
    name = configs.config_file_name(4096, 4096, "NVIDIA H200", (128, 128))
    assert name == "N=4096,K=4096,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128, 128].json"
    tuned = {"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4,
             "num_stages": 4}
    (config_dir / name).write_text(json.dumps({"1": tuned, "1024": tuned | {"BLOCK_SIZE_M": 128}}))
    _clear_config_caches()
    assert configs.get_config(4, 4096, 4096, "NVIDIA H200", (128, 128))["BLOCK_SIZE_M"] == 32
    assert configs.get_config(900, 4096, 4096, "NVIDIA H200", (128, 128))["BLOCK_SIZE_M"] == 128
    # no tuned entry within 4x of M: the default, not a decode config stretched over a prefill
    assert configs.get_config(64, 4096, 4096, "NVIDIA H200", (128, 128)) == \
        configs.default_config(64, 4096, 4096, (128, 128))
    assert configs.get_config(8192, 4096, 4096, "NVIDIA H200", (128, 128))["BLOCK_SIZE_M"] == 128


def test_tuned_triton_faster_than_cublas_takes_the_dispatch(config_dir, monkeypatch):
    """An entry that tune_gemm.py timed faster than cuBLAS block-wise turns cuBLAS off at that M and at the smaller
    M it is the next tuned M above (within 4x), for that shape and device only. Above it, up to the next tuned M,
    cuBLAS stays first, as it does above the largest tuned M (on an H100 a win at M = 256 lost at M = 1024)."""
    from kernelkit.ops.gemm import ops

    tuned = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 8, "num_warps": 4,
             "num_stages": 4, "SPLIT_K": 2}
    name = configs.config_file_name(2112, 256, "NVIDIA H100 80GB HBM3", (128, 128))
    (config_dir / name).write_text(json.dumps({"1": tuned, "16": tuned | {"faster_than_cublas": True},
                                               "256": tuned | {"faster_than_cublas": True},
                                               "1024": tuned | {"faster_than_cublas": False}}))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    cases = ((16, 2112, True), (5, 2112, True), (3, 2112, False), (200, 2112, True), (300, 2112, False),
             (1024, 2112, False), (2048, 2112, False), (16, 4096, False))
    for m, n, want in cases:
        assert configs.faster_than_cublas(m, n, 256, "NVIDIA H100 80GB HBM3", (128, 128)) is want, m
        (a, b, a_s, b_s), _, _ = _operands(m, n, 256, seed=m)
        why = ops._cublas_unsupported(a, b, a_s, b_s, (128, 128), torch.bfloat16)
        assert (why == "the tuned Triton config was timed faster at this shape and batch size") is want
        assert want or why is None
    assert not configs.faster_than_cublas(16, 2112, 256, "NVIDIA A100-SXM4-80GB", (128, 128))


def test_default_decode_config_splits_k_for_narrow_outputs():
    """M = 1: N = 4096 has 128 tiles of 32 columns, so K is split 3 ways (>= 264 programs); N = 28672 has enough
    tiles; a short K is never split below 4 blocks a program."""
    split = lambda n, k: configs.default_config(1, n, k, (128, 128))["SPLIT_K"]  # noqa: E731
    assert (split(4096, 4096), split(4096, 14336), split(28672, 4096), split(1024, 4096), split(1024, 384)) == \
        (3, 3, 1, 8, 1)
    assert "SPLIT_K" not in configs.default_config(4096, 4096, 4096, (128, 128))


def test_cublas_probe_classes_and_fallbacks(monkeypatch, kernelkit_logs):
    """The cuBLAS path's bookkeeping, with torch._scaled_mm replaced: it refuses unaligned scale columns (as
    cuBLAS did on an H200 at M = 2) and disagrees with the reference for N = 256. A refusal or disagreement
    returns the checked (Triton) result and retires that class only; agreeing classes go straight through."""
    from kernelkit.ops.gemm import scaled_mm

    def fake(a, b, a_s, b_s, out_dtype):
        if a_s.stride(1) % 4:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_NOT_SUPPORTED")
        out = reference.w8a8_block_fp8_matmul_ref(a, b, a_s, b_s, (128, 128), out_dtype)
        return out + 1 if b.shape[0] == 256 else out

    monkeypatch.setattr(scaled_mm, "_scaled_mm", fake)
    monkeypatch.setattr(scaled_mm, "_verdicts", {})
    calls = []

    def run(m, n):
        (a, b, a_s, b_s), _, _ = _operands(m, n, 256, seed=m)
        ref = reference.w8a8_block_fp8_matmul_ref(a, b, a_s, b_s, (128, 128), torch.float32)
        check = lambda: calls.append(m) or ref  # noqa: E731
        out = scaled_mm.matmul(a, b, a_s, b_s, (128, 128), torch.float32, check)
        assert torch.equal(out, ref)
        return scaled_mm._class(a, b, a_s, (128, 128))

    aligned = run(4, 128)
    assert scaled_mm._verdicts == {aligned: True} and calls == [4]
    run(8, 128)  # same class: no second check
    assert calls == [4]
    unaligned = run(2, 128)
    assert scaled_mm._verdicts[unaligned] is False and calls == [4, 2]
    assert "unsupported for M=2 N=128 K=256" in kernelkit_logs.text
    wrong = run(4, 256)
    assert scaled_mm._verdicts[wrong] is False and "disagrees" in kernelkit_logs.text
    (a, b, a_s, _), _, _ = _operands(2, 128, 256)
    assert scaled_mm.unsupported(a, b, a_s, (128, 128)) == "probed earlier: unsupported or wrong for this shape class"
