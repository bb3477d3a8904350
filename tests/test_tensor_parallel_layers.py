"""The layer contract split over tensor-parallel ranks, on the CPU over gloo (one process per rank, spawned):
every rank loads the same full checkpoint tensors through the one loader and keeps its share; the sharded
layers' outputs, gathered, equal the whole layers' at tp_size 1. QKV with KV heads split (9 query and 3 KV
heads over 3 ranks, SmolLM2's) and replicated (1 KV head over 2 ranks), gate_up, a row-parallel down with a
bias (all-reduce), the vocab-parallel embedding and LM head, and quantized layers whose shares are whole
blocks. A split that would cut a block, an uneven split and a method without a declared layout are
refused when the layer is built, in a single process. AWQ (AutoAWQ GEMM: 8 columns per int32, 128-row
groups) and msModelSlim W8A8 shard too; W4A8 (its Ascend-only ``scale_bias``) does not yet. FusedMoE splits
every expert's intermediate size (gate/up rows, down columns, outputs summed), unquantized and W8A8."""

import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from kernelkit import distributed
from kernelkit.layers import (
    ColumnParallelLinear,
    MergedColumnParallelLinear,
    ParallelLMHead,
    QKVParallelLinear,
    QuantContext,
    RowParallelLinear,
    VocabParallelEmbedding,
    load_tensors,
)
from kernelkit.layers.loader import packed_rules
from kernelkit.layers.moe import FusedMoE
from kernelkit.quant.awq.format import pack_autoawq
from kernelkit.quant.awq.format import quantize as awq_quantize
from kernelkit.quant.awq.linear import AwqLinearMethod
from kernelkit.quant.fp8_block.format import quantize_weight
from kernelkit.quant.fp8_block.linear import Fp8BlockLinearMethod
from kernelkit.quant.modelslim.format import quantize_weight as modelslim_quantize
from kernelkit.quant.modelslim.linear import W4A8DynamicLinearMethod, W8A8DynamicLinearMethod
from kernelkit.quant.modelslim.moe import W4A8DynamicMoEMethod, W8A8DynamicMoEMethod

PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


class _All:
    """Every linear layer with one method."""

    def __init__(self, method):
        self.method = method

    def linear_method(self, prefix):
        return self.method

    def moe_method(self, prefix):
        return None


METHODS = {"fp8": Fp8BlockLinearMethod((128, 128)), "awq": AwqLinearMethod(128), "w8a8": W8A8DynamicLinearMethod()}


def _to_checkpoint(quant, w):
    """A float weight [N, K] as the scheme's checkpoint tensors (suffix -> tensor)."""
    if quant == "fp8":
        q, s = quantize_weight(w)
        return {"weight": q, "weight_scale_inv": s}
    if quant == "awq":
        return pack_autoawq(*awq_quantize(w, 128))
    return modelslim_quantize(w)


def _build(tp_rank, tp_size, heads, kv_heads, quant_name=None):
    d, hidden, inter, vocab = 8, 48, 42, 24
    fp8 = quant_name is not None  # no biases, no embeddings: the quantized linears alone, at 128-aligned shares
    if fp8:
        d, hidden, inter = 128, 256, 256
    quant = QuantContext(_All(METHODS[quant_name]) if fp8 else None, PACKED)
    kw = {"quant": quant, "tp_rank": tp_rank, "tp_size": tp_size}
    model = nn.Module()
    model.qkv_proj = QKVParallelLinear(hidden, d, heads, kv_heads, bias=not fp8, prefix="m.qkv_proj", **kw)
    model.o_proj = RowParallelLinear(heads * d, hidden, bias=not fp8, prefix="m.o_proj", **kw)
    model.gate_up_proj = MergedColumnParallelLinear(hidden, [inter, inter], prefix="m.gate_up_proj", **kw)
    model.down_proj = RowParallelLinear(inter, hidden, prefix="m.down_proj", **kw)
    if not fp8:
        model.embed_tokens = VocabParallelEmbedding(vocab, hidden, prefix="m.embed_tokens", tp_rank=tp_rank,
                                                    tp_size=tp_size)
        model.lm_head = ParallelLMHead(vocab, hidden, prefix="m.lm_head", tp_rank=tp_rank, tp_size=tp_size)
    root = nn.Module()
    root.m = model
    return root, dict(d=d, hidden=hidden, inter=inter, vocab=vocab)


def _checkpoint(shapes, heads, kv_heads, quant_name):
    g = torch.Generator().manual_seed(7)
    d, hidden, inter, vocab = shapes["d"], shapes["hidden"], shapes["inter"], shapes["vocab"]
    linears = {"q_proj": (heads * d, hidden), "k_proj": (kv_heads * d, hidden), "v_proj": (kv_heads * d, hidden),
               "o_proj": (hidden, heads * d), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
               "down_proj": (hidden, inter)}
    tensors = []
    for name, shape in linears.items():
        w = torch.randn(*shape, generator=g) * 0.2
        if quant_name:
            tensors += [(f"m.{name}.{suffix}", t) for suffix, t in _to_checkpoint(quant_name, w).items()]
        else:
            tensors.append((f"m.{name}.weight", w))
            if name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                tensors.append((f"m.{name}.bias", torch.randn(shape[0], generator=g)))
    if not quant_name:
        tensors += [("m.embed_tokens.weight", torch.randn(vocab, hidden, generator=g)),
                    ("m.lm_head.weight", torch.randn(vocab, hidden, generator=g))]
    return [(n, t, "test") for n, t in tensors]


def _forward(root, x, ids):
    """Each layer on the same whole inputs (row-parallel layers on their rank's input columns)."""
    m, out = root.m, {}
    out["qkv"] = m.qkv_proj(x)
    out["gate_up"] = m.gate_up_proj(x)
    k_o, k_down = m.o_proj.input_shard, m.down_proj.input_shard
    out["o"] = m.o_proj(ids["attn"][:, k_o.start:k_o.start + k_o.size])
    out["down"] = m.down_proj(ids["act"][:, k_down.start:k_down.start + k_down.size])
    if hasattr(m, "embed_tokens"):
        out["embed"] = m.embed_tokens(ids["tokens"])
        out["logits"] = m.lm_head(x)
    return out


def _worker(rank, world, init, heads, kv_heads, quant_name):
    distributed.init_tensor_parallel(rank, world, init)
    try:
        torch.manual_seed(0)
        whole, shapes = _build(0, 1, heads, kv_heads, quant_name)
        part, _ = _build(rank, world, heads, kv_heads, quant_name)
        tensors = _checkpoint(shapes, heads, kv_heads, quant_name)
        for model in (whole, part):
            load_tensors(model, tensors, packed_rules(PACKED))
        g = torch.Generator().manual_seed(3)
        x = torch.randn(5, shapes["hidden"], generator=g)
        inputs = {"attn": torch.randn(5, heads * shapes["d"], generator=g),
                  "act": torch.randn(5, shapes["inter"], generator=g),
                  "tokens": torch.randint(0, shapes["vocab"], (5,), generator=g)}
        with torch.no_grad():
            ref, ours = _forward(whole, x, inputs), _forward(part, x, inputs)
        tol = {"rtol": 0, "atol": 1e-5} if not quant_name else {"rtol": 0, "atol": 1e-4}
        d, qkv = shapes["d"], part.m.qkv_proj
        q_ref, k_ref, v_ref = ref["qkv"].split([heads * d, kv_heads * d, kv_heads * d], dim=-1)
        q, k, v = ours["qkv"].split([qkv.num_heads * d, qkv.num_kv_heads * d, qkv.num_kv_heads * d], dim=-1)
        qs, ks = qkv.output_shards[0], qkv.output_shards[1]
        torch.testing.assert_close(q, q_ref[:, qs.start:qs.start + qs.size], **tol)
        torch.testing.assert_close(k, k_ref[:, ks.start:ks.start + ks.size], **tol)
        torch.testing.assert_close(v, v_ref[:, ks.start:ks.start + ks.size], **tol)
        torch.testing.assert_close(distributed.all_gather(q), q_ref, **tol)
        inter = shapes["inter"]
        gate, up = ours["gate_up"].chunk(2, dim=-1)
        gate_ref, up_ref = ref["gate_up"].split([inter, inter], dim=-1)
        torch.testing.assert_close(distributed.all_gather(gate), gate_ref, **tol)
        torch.testing.assert_close(distributed.all_gather(up), up_ref, **tol)
        # row-parallel: each rank's input columns, the partial products summed over the ranks, bias once
        for name in ("o", "down"):
            if quant_name == "w8a8":  # each rank quantizes its own share of the row: other per-token scales
                assert (ours[name] - ref[name]).norm() / ref[name].norm() < 1e-2
            else:
                torch.testing.assert_close(ours[name], ref[name], **tol)
        if not quant_name:
            torch.testing.assert_close(ours["embed"], ref["embed"], rtol=0, atol=0)
            torch.testing.assert_close(ours["logits"], ref["logits"], **tol)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world, heads, kv_heads, quant_name", [
    (3, 9, 3, None), (2, 4, 1, None), (2, 4, 2, "fp8"), (2, 4, 2, "awq"), (2, 4, 2, "w8a8")],
    ids=["smollm2-heads-tp3", "replicated-kv-tp2", "fp8-block-tp2", "awq-tp2", "modelslim-w8a8-tp2"])
def test_sharded_layers_equal_the_whole_ones(world, heads, kv_heads, quant_name):
    with tempfile.TemporaryDirectory() as tmp:
        init = (Path(tmp) / "rendezvous").as_uri()
        mp.spawn(_worker, args=(world, init, heads, kv_heads, quant_name), nprocs=world, join=True)


class _Experts:
    """Every MoE layer with one method (None: unquantized)."""

    def __init__(self, method):
        self.method = method

    def linear_method(self, prefix):
        return None

    def moe_method(self, prefix):
        return self.method


def _moe(tp_rank, tp_size, method, experts=5, hidden=64, inter=96):
    quant = QuantContext(_Experts(method))
    layer = FusedMoE(experts, 2, hidden, inter, quant=quant, prefix="m.experts", tp_rank=tp_rank, tp_size=tp_size)
    g = torch.Generator().manual_seed(7)
    for e in range(experts):  # every rank reads the same whole checkpoint tensors and keeps its share
        parts = {("w13_", (e, 0)): torch.randn(inter, hidden, generator=g) * 0.1,
                 ("w13_", (e, 1)): torch.randn(inter, hidden, generator=g) * 0.1,
                 ("w2_", (e, 0)): torch.randn(hidden, inter, generator=g) * 0.1}
        for (stem, shard_id), w in parts.items():
            tensors = {"weight": w} if method is None else modelslim_quantize(w)
            for suffix, t in tensors.items():
                param = getattr(layer, stem + suffix)
                param.weight_loader(param, t, shard_id)
    layer.quant_method.process_weights_after_loading(layer)
    return layer


def _moe_worker(rank, world, init, quantized):
    distributed.init_tensor_parallel(rank, world, init)
    try:
        method = W8A8DynamicMoEMethod() if quantized else None
        whole, part = _moe(0, 1, method), _moe(rank, world, method)
        assert part.w13_weight.shape[1] == 2 * 96 // world and part.w2_weight.shape[2] == 96 // world
        g = torch.Generator().manual_seed(3)
        x, logits = torch.randn(11, 64, generator=g), torch.randn(11, 5, generator=g)
        with torch.no_grad():
            ref, ours = whole(x, logits), part(x, logits)
        if quantized:  # each rank quantizes its own share of the intermediate activations: other token scales
            assert (ours - ref).norm() / ref.norm() < 1e-2
        else:
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("quantized", [False, True], ids=["unquantized", "modelslim-w8a8"])
def test_fused_moe_split_over_two_ranks_equals_the_whole_layer(quantized):
    with tempfile.TemporaryDirectory() as tmp:
        init = (Path(tmp) / "rendezvous").as_uri()
        mp.spawn(_moe_worker, args=(2, init, quantized), nprocs=2, join=True)


def test_fused_moe_splits_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="m.experts expert intermediate size: 96 is not divisible by the "
                                         "tensor-parallel size 5"):
        FusedMoE(4, 2, 64, 96, prefix="m.experts", tp_rank=0, tp_size=5)
    with pytest.raises(NotImplementedError, match=r"m.experts.w13_weight: its method does not declare how it "
                                                  r"splits"):
        FusedMoE(4, 2, 64, 96, quant=QuantContext(_Experts(W4A8DynamicMoEMethod())), prefix="m.experts",
                 tp_rank=0, tp_size=2)


def test_kv_heads_replicated_on_the_ranks_whose_queries_they_serve():
    shards = [QKVParallelLinear(16, 8, 8, 2, tp_rank=r, tp_size=4).output_shards[1] for r in range(4)]
    assert [s.start // 8 for s in shards] == [0, 0, 1, 1] and all(s.size == 8 for s in shards)


def test_splits_that_do_not_fit_are_refused_when_the_layer_is_built():
    fp8 = QuantContext(_All(METHODS["fp8"]), PACKED)
    with pytest.raises(ValueError, match=r"rows \[0, 192\) of 576 are not whole 128-row blocks"):
        ColumnParallelLinear(576, 576, quant=fp8, prefix="m.q_proj", tp_rank=0, tp_size=3)
    with pytest.raises(ValueError, match=r"input rows \[192, 384\) of 576 are not whole 128-row blocks"):
        RowParallelLinear(576, 576, quant=fp8, prefix="m.o_proj", tp_rank=1, tp_size=3)
    with pytest.raises(ValueError, match="query heads: 9 is not divisible by the tensor-parallel size 2"):
        QKVParallelLinear(64, 8, 9, 3, tp_rank=0, tp_size=2)
    with pytest.raises(ValueError, match="3 KV heads cannot be replicated evenly over 4"):
        QKVParallelLinear(64, 8, 12, 3, tp_rank=0, tp_size=4)
    with pytest.raises(ValueError, match="vocabulary: 25 is not divisible"):
        VocabParallelEmbedding(25, 8, tp_rank=0, tp_size=2)
    with pytest.raises(NotImplementedError, match=r"m.o_proj.weight: its method does not declare how it splits"):
        RowParallelLinear(256, 256, quant=QuantContext(_All(W4A8DynamicLinearMethod())), prefix="m.o_proj",
                          tp_rank=0, tp_size=2)
    with pytest.raises(ValueError, match="rank 2 of size 2 is not a rank"):
        ColumnParallelLinear(8, 8, tp_rank=2, tp_size=2)


def test_a_method_without_a_declared_layout_runs_only_unsplit():
    from kernelkit.layers.base import LinearMethod, set_weight_attrs

    class Opaque(LinearMethod):
        def create_weights(self, layer, input_size, output_partition_sizes, params_dtype):
            layer.register_parameter("packed", set_weight_attrs(nn.Parameter(torch.empty(1), requires_grad=False)))

        def apply(self, layer, x, bias=None):
            return x

    class Source:
        def linear_method(self, prefix):
            return Opaque()

        def moe_method(self, prefix):
            return None

    quant = QuantContext(Source())
    ColumnParallelLinear(8, 8, quant=quant, prefix="m.x", tp_size=1)
    with pytest.raises(NotImplementedError, match=r"m.x.packed: its method does not declare how it splits"):
        ColumnParallelLinear(8, 8, quant=quant, prefix="m.x", tp_rank=0, tp_size=2)
