"""GPU: the block-FP8 GEMM backends against the reference, Fp8BlockLinear under torch.compile and CUDA graphs,
and transformers' FineGrainedFP8 reading a checkpoint converted on the GPU. Skipped without a GPU."""

import copy

import pytest
import torch
from hf_checks import assert_same_dequantized_weights

from kernelkit.ops import per_token_group_quant_fp8, w8a8_block_fp8_matmul
from kernelkit.ops.dispatch import last_used
from kernelkit.ops.gemm import configs, reference, scaled_mm, triton_impl
from kernelkit.quant import quantize_
from kernelkit.quant.fp8_block.format import quantize_weight

pytestmark = pytest.mark.gpu
SHAPES = [(1, 4096, 4096), (4, 4096, 4096), (2, 4096, 4096), (16, 2112, 7168), (37, 2112, 7168), (64, 576, 1536),
          (300, 1536, 576), (4096, 4096, 14336)]


def _operands(m, n, k, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(m, k, device="cuda", generator=g, dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", generator=g) * 0.02
    pad = -k % 128
    xq, xs = per_token_group_quant_fp8(torch.nn.functional.pad(x, (0, pad)), 128, column_major_scales=True)
    wq, ws = quantize_weight(w)
    return xq[:, :k], wq, xs, ws


@pytest.mark.parametrize("m, n, k", SHAPES)
def test_triton_gemm_matches_reference(m, n, k):
    a, b, a_s, b_s = _operands(m, n, k)
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    triton_impl.w8a8_block_fp8_matmul(a, b, a_s, b_s, (128, 128), out, configs.get_config(
        m, n, k, torch.cuda.get_device_name(), (128, 128)))
    ref = reference.w8a8_block_fp8_matmul_ref(a, b, a_s, b_s, (128, 128), torch.float32)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("m, n, k", SHAPES)
def test_dispatch_matches_reference_and_probes_cublas_once(m, n, k):
    a, b, a_s, b_s = _operands(m, n, k, seed=1)
    for _ in range(2):
        out = w8a8_block_fp8_matmul(a, b, a_s, b_s, [128, 128])
        ref = reference.w8a8_block_fp8_matmul_ref(a, b, a_s, b_s, (128, 128), torch.float32)
        torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
    assert last_used()["w8a8_block_fp8_matmul"] in ("cublas", "triton")
    if k % 128 == 0 and n % 16 == 0:
        assert scaled_mm._class(a, b, a_s, (128, 128)) in scaled_mm._verdicts


def test_linear_on_gpu_matches_cpu_and_runs_in_graphs_and_compile():
    torch.manual_seed(0)
    linear = torch.nn.Linear(576, 1536, bias=False)
    cpu_layer = quantize_(torch.nn.Sequential(linear), "fp8-block")[0]
    gpu_layer = quantize_(torch.nn.Sequential(copy.deepcopy(linear).cuda().bfloat16()), "fp8-block")[0]
    x = torch.randn(37, 576)
    y_cpu = cpu_layer(x)
    y_gpu = gpu_layer(x.cuda().bfloat16())
    # bf16 input and output on the GPU move some activations across FP8 rounding boundaries: compare by norm
    assert ((y_gpu.float().cpu() - y_cpu).norm() / y_cpu.norm()).item() < 2e-2
    compiled = torch.compile(gpu_layer, fullgraph=True)
    torch.testing.assert_close(compiled(x.cuda().bfloat16()), y_gpu)
    static_x = x.cuda().bfloat16()
    gpu_layer(static_x)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = gpu_layer(static_x)
    graph.replay()
    torch.testing.assert_close(static_y, y_gpu)


@pytest.fixture(scope="module")
def gpu_converted(tmp_path_factory):
    """The tiny llama converted to fp8-block on the GPU, 64 x 64 blocks: transformers needs K to be a multiple of
    the activation group, and the tiny model's 192 is not one of 128."""
    from tiny_llama import write_tiny_model

    from kernelkit.convert import convert

    tmp = tmp_path_factory.mktemp("fp8")
    return convert(write_tiny_model(tmp / "src"), tmp / "fp8", scheme_options={"block_size": (64, 64)},
                   progress=False)


def _logits(model, seed=0):
    ids = torch.randint(2, 300, (3, 41), device="cuda", generator=torch.Generator(device="cuda").manual_seed(seed))
    with torch.no_grad():
        return model(ids).logits.float()


def test_transformers_dequantizes_a_gpu_conversion_to_our_weights(gpu_converted):
    """FineGrainedFP8 with ``dequantize=True`` (weight-only): its weights are ours, dequantized, bit for bit;
    logits differ by our activation quantization only."""
    from transformers import AutoModelForCausalLM, FineGrainedFP8Config

    from kernelkit.eval.load import load_causal_lm

    theirs = AutoModelForCausalLM.from_pretrained(
        gpu_converted, dtype=torch.float32, device_map="cuda",
        quantization_config=FineGrainedFP8Config(weight_block_size=(64, 64), dequantize=True)).eval()
    ours = load_causal_lm(gpu_converted, dtype=torch.bfloat16, device="cuda")
    assert assert_same_dequantized_weights(theirs, ours) == 2 * 7
    a, b = _logits(theirs), _logits(ours)
    assert ((a - b).norm() / a.norm()).item() < 0.1


def test_transformers_fp8_kernels_match_our_model(gpu_converted):
    """FineGrainedFP8 running its own W8A8 kernels (dynamic per-token-group activations, as ours). transformers
    5 fetches those kernels through the `kernels` package from the Hugging Face Hub; skipped where it cannot."""
    from transformers import AutoModelForCausalLM

    from kernelkit.eval.load import load_causal_lm

    try:
        theirs = AutoModelForCausalLM.from_pretrained(gpu_converted, dtype=torch.bfloat16, device_map="cuda").eval()
        a = _logits(theirs)
    except ImportError as e:  # no `kernels` package, or no Hub access to fetch the kernel
        pytest.skip(f"transformers' FP8 kernels unavailable: {e}")
    assert sum("FP8" in type(m).__name__ for m in theirs.modules()) == 2 * 7
    b = _logits(load_causal_lm(gpu_converted, dtype=torch.bfloat16, device="cuda"))
    assert ((a - b).norm() / a.norm()).item() < 2e-2
    assert (a.argmax(-1) == b.argmax(-1)).float().mean().item() > 0.95
