"""kernelkit's op definitions (``kernelkit.ops.library``): schema from the signature, fake implementations for
torch.compile, and no silent backward through an inference kernel."""

import pytest
import torch

from kernelkit.ops.layers.ops import rms_norm, silu_and_mul


def test_forward_on_inputs_that_require_grad_works_and_backward_raises():
    x = torch.randn(3, 16, requires_grad=True)
    weight = torch.nn.Parameter(torch.ones(16))
    out, _ = rms_norm(x, weight, 1e-5)
    assert out.requires_grad
    with pytest.raises(RuntimeError, match="kernelkit::rms_norm is an inference kernel"):
        out.sum().backward()
    with pytest.raises(RuntimeError, match="kernelkit::silu_and_mul is an inference kernel"):
        silu_and_mul(x).sum().backward()


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_without_grad_outputs_are_plain_tensors(mode):
    x = torch.randn(3, 16, requires_grad=True)
    with mode():
        out = silu_and_mul(x)
    assert not out.requires_grad and out.grad_fn is None and out.shape == (3, 8)


def test_schema_is_inferred_from_the_signature():
    schema = str(torch.ops.kernelkit.rms_norm.default._schema)
    assert schema == "kernelkit::rms_norm(Tensor x, Tensor weight, float eps, Tensor? residual) -> (Tensor, Tensor)"
    torch.library.opcheck(torch.ops.kernelkit.silu_and_mul, (torch.randn(4, 32),))
