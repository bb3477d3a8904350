"""AWQ weight formats against their owners' definitions, each transcribed here from its source:
AutoAWQ (awq/quantize/quantizer.py ``pseudo_quantize_tensor``; awq/modules/linear/gemm.py
``WQLinear_GEMM.from_linear``; awq/utils/packing_utils.py ``unpack_awq``/``reverse_awq_order``) and
compressed-tensors (compressors/quantized_compressors/pack_quantized.py ``pack_to_int32``)."""

import pytest
import torch

from kernelkit.quant.awq import format as awq

SHAPES = [(64, 128, 32), (192, 576, 64), (24, 40, 8)]  # (N, K, group)


def _autoawq_pseudo_quantize(w, group_size):
    """AutoAWQ's zero-point fake quantization, as written there (4 bits)."""
    shape = w.shape
    w = w.reshape(-1, group_size)
    max_val, min_val = w.amax(dim=1, keepdim=True), w.amin(dim=1, keepdim=True)
    scales = (max_val - min_val).clamp(min=1e-5) / 15
    zeros = (-torch.round(min_val / scales)).clamp_(0, 15)
    w = (torch.clamp(torch.round(w / scales) + zeros, 0, 15) - zeros) * scales
    return w.reshape(shape), scales.view(shape[0], -1), zeros.view(shape[0], -1)


def _autoawq_pack(intweight_nk, zeros_ng):
    """WQLinear_GEMM.from_linear's packing loops: int columns into int32 with order_map [0,2,4,6,1,3,5,7]."""
    order_map = [0, 2, 4, 6, 1, 3, 5, 7]

    def pack(t):  # t [rows, N]
        out = torch.zeros(t.shape[0], t.shape[1] // 8, dtype=torch.int32)
        for col in range(t.shape[1] // 8):
            for i in range(8):
                out[:, col] |= t[:, col * 8 + order_map[i]] << (i * 4)
        return out

    return pack(intweight_nk.t().contiguous().to(torch.int32)), pack(zeros_ng.t().contiguous().to(torch.int32))


def _autoawq_unpack(qweight):
    """unpack_awq + reverse_awq_order for 4 bits."""
    shifts = torch.arange(0, 32, 4)
    iweights = torch.bitwise_right_shift(qweight[:, :, None], shifts[None, None, :]).to(torch.int8)
    iweights = iweights.view(iweights.shape[0], -1)
    reverse = torch.arange(iweights.shape[-1]).view(-1, 8)[:, [0, 4, 1, 5, 2, 6, 3, 7]].view(-1)
    return torch.bitwise_and(iweights[:, reverse], 15)


def _ct_pack_to_int32(value, packed_dim=1):
    """compressed-tensors pack_to_int32 for 4 bits: signed int8 + 8, padded, sequential nibbles."""
    value = (value + 8).to(torch.uint8)
    if packed_dim == 0:
        value = value.transpose(0, 1)
    value = value.contiguous()
    rows, cols = value.shape
    value = torch.nn.functional.pad(value, (0, -cols % 8))
    packed = (value.view(rows, -1, 8).to(torch.int32) << (torch.arange(8, dtype=torch.int32) * 4)).sum(
        2, dtype=torch.int32)
    return packed.transpose(0, 1) if packed_dim == 0 else packed


@pytest.mark.parametrize("n, k, group", SHAPES)
def test_quantization_is_autoawqs(n, k, group):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(n)) * 0.05
    w[0, :group] = 0.0  # a flat group: scale clamps at 1e-5
    q, scales, zeros = awq.quantize(w, group)
    ref_w, ref_scales, ref_zeros = _autoawq_pseudo_quantize(w, group)
    assert torch.equal(scales, ref_scales) and torch.equal(zeros.float(), ref_zeros)
    assert torch.equal(awq.dequantize(q, scales, zeros, group), ref_w)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15


@pytest.mark.parametrize("n, k, group", SHAPES)
def test_autoawq_gemm_packing_is_bit_exact(n, k, group):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(k)) * 0.05
    q, scales, zeros = awq.quantize(w, group)
    packed = awq.pack_autoawq(q, scales, zeros)
    ref_qweight, ref_qzeros = _autoawq_pack(q, zeros)
    assert packed["qweight"].shape == (k, n // 8) and packed["qzeros"].shape == (k // group, n // 8)
    assert torch.equal(packed["qweight"], ref_qweight) and torch.equal(packed["qzeros"], ref_qzeros)
    assert packed["scales"].dtype == torch.float16 and packed["scales"].shape == (k // group, n)
    assert torch.equal(_autoawq_unpack(packed["qweight"]).t().to(torch.uint8), q)
    q2, s2, z2 = awq.unpack_autoawq(**packed)
    assert torch.equal(q2, q) and torch.equal(z2, zeros) and torch.equal(s2, scales.half().float())


@pytest.mark.parametrize("n, k, group", SHAPES)
def test_compressed_tensors_packing_is_bit_exact(n, k, group):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(n + k)) * 0.05
    q, scales, zeros = awq.quantize(w, group)
    packed = awq.pack_compressed_tensors(q, scales, zeros)
    signed_q, signed_zeros = q.to(torch.int8) - 8, zeros.to(torch.int8) - 8  # llm-compressor's AutoAWQ shift
    assert torch.equal(packed["weight_packed"], _ct_pack_to_int32(signed_q))
    assert torch.equal(packed["weight_zero_point"], _ct_pack_to_int32(signed_zeros, packed_dim=0))
    assert packed["weight_shape"].tolist() == [n, k] and packed["weight_scale"].shape == (n, k // group)
    q2, s2, z2 = awq.unpack_compressed_tensors(**packed)
    assert torch.equal(q2, q) and torch.equal(z2, zeros) and torch.equal(s2, scales.to(torch.bfloat16).float())
    # both formats dequantize to the same weight: (q - z) * s is invariant under the shift by 8
    deq = ((signed_q.float() - signed_zeros.float().repeat_interleave(group, 1)) *
           scales.repeat_interleave(group, 1))
    assert torch.equal(deq, awq.dequantize(q, scales, zeros, group))


@pytest.mark.parametrize("n, k, group", SHAPES)
def test_compressed_tensors_reads_our_pack_quantized_tensors(n, k, group):
    """compressed-tensors' own code (its unpack_from_int32 and dequantize, as vLLM's and transformers'
    compressed-tensors loaders run them) gives our weight back from what we write."""
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize

    w = torch.randn(n, k, generator=torch.Generator().manual_seed(n * k)) * 0.05
    q, scales, zeros = awq.quantize(w, group)
    packed = awq.pack_compressed_tensors(q, scales, zeros)
    shape = torch.Size(packed["weight_shape"].tolist())
    theirs_q = helpers.unpack_from_int32(packed["weight_packed"], 4, shape)
    theirs_z = helpers.unpack_from_int32(packed["weight_zero_point"], 4, torch.Size([n, k // group]), packed_dim=0)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group", group_size=group)
    theirs = dequantize(theirs_q, packed["weight_scale"].float(), theirs_z, args)
    assert torch.equal(theirs, awq.dequantize(q, scales.to(torch.bfloat16).float(), zeros, group))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="multiple of the group size 128"):
        awq.quantize(torch.randn(64, 576), 128)
    q, s, z = awq.quantize(torch.randn(12, 64), 32)
    with pytest.raises(ValueError, match="N = 12 is not a multiple of 8"):
        awq.pack_autoawq(q, s, z)
