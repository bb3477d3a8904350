"""The Triton fused MoE layer (``fused_moe_triton.fused_moe``) against the plain-torch references: float experts
against ``fused_moe_ref``, int8 W8A8 and packed-int4 W4A8 experts against ``fused_moe_w8a8_ref`` (Triton's
interpreter on CPU; the GPU when there is one). K = 40 and I = 24 are not multiples of the tiles, expert 3 is
never chosen, a NaN token stays in its own row, T = 0 and T = 1 are covered; and the launch-config files."""

import json

import pytest
import torch

from kernelkit.ops.int4_pack import pack_int4, unpack_int4
from kernelkit.ops.moe import configs, fused_moe_triton, reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
E, TOP_K, H, INTER = 8, 2, 40, 24


def _routing(tokens, g):
    logits = torch.randn(tokens, E, generator=g)
    logits[:, 3] = -1e4
    weights, ids = reference.select_experts(logits, TOP_K, True)
    return weights.to(DEVICE), ids.to(DEVICE)


def _x(tokens, dtype, g):
    x = torch.randn(tokens, H, generator=g).to(dtype)
    if tokens > 2:
        x[2, 7] = float("nan")
    return x.to(DEVICE)


def _check_nan_rows(ours, tokens):
    if tokens > 2:
        assert ours[2].isnan().all() and not ours[[r for r in range(tokens) if r != 2]].isnan().any()


@pytest.mark.parametrize("tokens", [0, 1, 5, 37])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    DEVICE == "cpu", reason="Triton's interpreter computes tl.dot of bf16 inputs wrongly (measured: errors ~1e10)"))])
def test_float_experts_match_the_reference(tokens, dtype):
    g = torch.Generator().manual_seed(tokens)
    w13 = (torch.randn(E, 2 * INTER, H, generator=g) * 0.2).to(dtype).to(DEVICE)
    w2 = (torch.randn(E, H, INTER, generator=g) * 0.2).to(dtype).to(DEVICE)
    x = _x(tokens, dtype, g)
    weights, ids = _routing(tokens, g)
    ours = fused_moe_triton.fused_moe(x, w13, w2, weights, ids).float().cpu()
    expected = reference.fused_moe_ref(x.cpu(), w13.cpu(), w2.cpu(), weights.cpu(), ids.cpu()).float()
    assert ours.shape == (tokens, H)
    _check_nan_rows(ours, tokens)
    tol = (1e-4 if DEVICE == "cpu" else 1e-2) if dtype == torch.float32 else 3e-2  # the GPU's fp32 dot is tf32
    torch.testing.assert_close(ours, expected, rtol=tol, atol=tol, equal_nan=True)


def _int_weights(g, bits):
    limit = 127 if bits == 8 else 7
    w13 = torch.randint(-limit, limit + 1, (E, 2 * INTER, H), generator=g, dtype=torch.int8)
    w2 = torch.randint(-limit, limit + 1, (E, H, INTER), generator=g, dtype=torch.int8)
    s13 = torch.rand(E, 2 * INTER, generator=g) * 0.02 / limit + 1e-4
    s2 = torch.rand(E, H, generator=g) * 0.1 / limit + 1e-4
    return w13, w2, s13, s2


@pytest.mark.parametrize("tokens", [0, 1, 5, 37])
@pytest.mark.parametrize("bits", [8, 4])
def test_int_experts_match_the_w8a8_reference(tokens, bits):
    """int8 weights, or int4 ones packed two per byte along the output rows and unpacked in the kernel: the
    integer sums are exact, so only the bf16 rounding of the gate_up output and an occasional int8 rounding of
    the SwiGLU output on a tie may differ."""
    g = torch.Generator().manual_seed(100 + tokens)
    w13, w2, s13, s2 = _int_weights(g, bits)
    x = _x(tokens, torch.bfloat16 if DEVICE == "cuda" else torch.float32, g)
    weights, ids = _routing(tokens, g)
    expected = reference.fused_moe_w8a8_ref(x.cpu(), w13, w2, s13, s2, weights.cpu(), ids.cpu()).float()
    packed = (pack_int4(w13), pack_int4(w2)) if bits == 4 else (w13, w2)
    ours = fused_moe_triton.fused_moe(x, packed[0].to(DEVICE), packed[1].to(DEVICE), weights, ids, s13.to(DEVICE),
                                      s2.to(DEVICE), int4=bits == 4).float().cpu()
    assert ours.shape == (tokens, H)
    _check_nan_rows(ours, tokens)
    scale = expected[torch.isfinite(expected)].abs().max().item() if tokens else 1.0
    torch.testing.assert_close(ours, expected, rtol=2e-2, atol=2e-2 * scale, equal_nan=True)


def test_int4_packing_is_two_rows_per_byte_low_nibble_first():
    q = torch.tensor([[1, -2], [-7, 7], [0, 3], [-8, 5]], dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.shape == (2, 2) and packed.dtype == torch.int8
    assert packed.view(torch.uint8)[0].tolist() == [0x91, 0x7E] and packed.view(torch.uint8)[1].tolist() == [0x80,
                                                                                                              0x53]
    assert torch.equal(unpack_int4(packed), q)


def test_tuned_config_files_are_found_by_vllms_names(tmp_path, monkeypatch):
    name = configs.config_file_name(128, 768, "NVIDIA H200", "int8_w8a8")
    assert name == "E=128,N=768,device_name=NVIDIA_H200,dtype=int8_w8a8.json"
    assert configs.config_file_name(128, 768, "NVIDIA H200", None) == "E=128,N=768,device_name=NVIDIA_H200.json"
    tuned = {"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4,
             "num_stages": 4}
    (tmp_path / name).write_text(json.dumps({"1": tuned, "4096": {**tuned, "BLOCK_SIZE_M": 128}}))
    monkeypatch.setattr(configs, "CONFIG_DIR", tmp_path)
    configs.get_config.cache_clear()
    try:
        assert configs.get_config(2, 8, 128, 768, "NVIDIA H200", "int8_w8a8") == tuned
        assert configs.get_config(3000, 8, 128, 768, "NVIDIA H200", "int8_w8a8")["BLOCK_SIZE_M"] == 128
        assert configs.get_config(2, 8, 128, 768, "NVIDIA H100", "int8_w8a8") == configs.default_config(2, 8, 128)
        (tmp_path / name).write_text(json.dumps({"1": {"BLOCK_SIZE_M": 16}}))
        configs._load.cache_clear()
        with pytest.raises(ValueError, match="an entry lacks"):
            configs.get_config(1, 8, 128, 768, "NVIDIA H200", "int8_w8a8")
        with pytest.raises(ValueError, match="dtype must be one of"):
            configs.config_file_name(128, 768, "x", "fp4")
    finally:
        configs.get_config.cache_clear()
        configs._load.cache_clear()


@pytest.mark.parametrize("bits", [16, 8, 4])
def test_fused_experts_op_runs_every_weight_type_and_has_a_fake(bits):
    """``kernelkit::fused_experts``: on the GPU the Triton kernels against the reference; on the CPU float
    experts go through ``torch._grouped_mm`` against the per-expert definition. Its fake gives x's shape."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from kernelkit.ops.moe.ops import fused_experts

    g = torch.Generator().manual_seed(bits)
    weights, ids = _routing(9, g)
    dtype = torch.bfloat16 if DEVICE == "cuda" or bits != 16 else torch.float32
    x = _x(9, dtype, g)
    if bits == 16:
        w13, w2 = ((torch.randn(E, n, k, generator=g) * 0.2).to(dtype) for n, k in ((2 * INTER, H), (H, INTER)))
        args, scales = (w13, w2), ()
        expected = reference.fused_moe_ref(x.cpu(), w13, w2, weights.cpu(), ids.cpu())
    else:
        w13, w2, s13, s2 = _int_weights(g, bits)
        args, scales = ((pack_int4(w13), pack_int4(w2)) if bits == 4 else (w13, w2)), (s13, s2)
        expected = reference.fused_moe_w8a8_ref(x.cpu(), w13, w2, s13, s2, weights.cpu(), ids.cpu())
    on = [t.to(DEVICE) for t in (*args, weights, ids, *scales)]
    ours = fused_experts(x, *on[:2], on[2], on[3], *on[4:], int4=bits == 4).float().cpu()
    _check_nan_rows(ours, 9)
    scale = expected[torch.isfinite(expected)].abs().max().item()
    torch.testing.assert_close(ours, expected.float(), rtol=3e-2, atol=3e-2 * scale, equal_nan=True)
    assert fused_experts(x[:0], *on[:2], on[2][:0], on[3][:0], *on[4:], int4=bits == 4).shape == (0, H)
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (x, *on)]
        assert fused_experts(fake[0], *fake[1:3], fake[3], fake[4], *fake[5:], int4=bits == 4).shape == (9, H)


def test_fused_experts_rejects_what_does_not_fit():
    from kernelkit.ops.moe.ops import fused_experts

    g = torch.Generator().manual_seed(0)
    w13, w2, s13, s2 = _int_weights(g, 8)
    weights, ids = _routing(3, g)
    x = torch.randn(3, H)
    with pytest.raises(ValueError, match="need w13_scale and w2_scale"):
        fused_experts(x, w13, w2, weights, ids)
    with pytest.raises(ValueError, match="do not fit x"):
        fused_experts(x[:, :-1], w13, w2, weights, ids, s13, s2)
    with pytest.raises(ValueError, match="topk_weights/topk_ids"):
        fused_experts(x, w13, w2, weights[:2], ids, s13, s2)
    with pytest.raises(ValueError, match="do not fit x"):
        fused_experts(x.bfloat16(), w13.float(), w2.float(), weights, ids)


@pytest.mark.parametrize("rows, d", [(0, 24), (1, 24), (37, 24), (5, 1000)])
def test_silu_and_mul_quant_is_the_two_ops_in_one_pass(rows, d):
    from kernelkit.ops.quant.reference import per_token_quant_int8_ref

    g = torch.Generator().manual_seed(rows + d)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    h = (torch.randn(rows, 2 * d, generator=g) * 3).to(dtype)
    if rows > 2:
        h[2, 5] = float("nan")
    q, scale = fused_moe_triton.silu_and_mul_quant_int8(h.to(DEVICE))
    gate, up = h.float().chunk(2, dim=-1)
    act = (torch.nn.functional.silu(gate).to(dtype).float() * up).to(dtype)
    q_ref, scale_ref = per_token_quant_int8_ref(act)
    assert q.shape == (rows, d) and scale.shape == (rows, 1)
    torch.testing.assert_close(scale.cpu(), scale_ref, equal_nan=True)
    assert ((q.cpu().int() - q_ref.int()).abs() <= 1).all()  # a value on a rounding tie may land apart
    assert (q.cpu() == q_ref).float().mean() > 0.99 if rows else q.numel() == 0
