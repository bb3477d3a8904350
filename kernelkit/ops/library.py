"""Defining kernelkit's ``torch.library`` ops with little host overhead per call.

``torch.library.custom_op`` wraps every call in Python layers (an autograd function, a dynamo guard, aliasing
checks): 40-67 µs a call on the H200 machine's CPU, against 9-10 µs for an aten op and 16-26 µs for a bare
Triton launch (benches/RESULTS.md). Ops defined here take the same schema (inferred from the Python signature
by ``torch.library.infer_schema``) and the same fake (meta) implementations, so they work under
``torch.compile`` and in CUDA graphs, but the dispatcher calls their CPU and CUDA kernels directly
(``Library.impl``). They have no autograd formula (inference kernels). As with ``custom_op``, a forward on
inputs that require grad works and a backward through it raises; the check costs ~2 µs a call, and nothing
under ``torch.inference_mode()``, where the autograd key is skipped. Ops that mutate their arguments get
torch's default instead (a warning if a backward pass reaches them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

_LIB = torch.library.Library("kernelkit", "FRAGMENT")
_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


class KernelOp:
    """``kernelkit::<name>``: ``register_kernel(device)`` and ``register_fake`` decorators, as custom_op's."""

    def __init__(self, name: str):
        self.name = name

    def register_kernel(self, device: str) -> Callable[[Callable], Callable]:
        def register(fn: Callable) -> Callable:
            _LIB.impl(self.name, fn, _DISPATCH_KEYS[device])
            return fn

        return register

    def register_fake(self, fn: Callable) -> Callable:
        torch.library.register_fake(f"kernelkit::{self.name}", fn, lib=_LIB)
        return fn


class _NoBackward(torch.autograd.Function):
    """Runs an op in forward; raises in backward (the op has no formula)."""

    @staticmethod
    def forward(ctx, overload, *args):
        ctx.op = overload.name()
        return overload(*args)  # grad mode is off inside forward: the Autograd kernel below passes straight through

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(f"{ctx.op} is an inference kernel without an autograd formula")


def _autograd_kernel(overload) -> Callable:
    def kernel(*args):
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return _NoBackward.apply(overload, *args)
        with torch._C._AutoDispatchBelowAutograd():
            return overload(*args)

    return kernel


def kernel_op(name: str, mutates_args: Sequence[str] = ()) -> Callable[[Callable], KernelOp]:
    """Decorator: define ``kernelkit::<name>`` from the decorated function's annotated signature and register
    the function as its CPU kernel. Raises what ``infer_schema`` and ``Library.define`` raise (an unsupported
    annotation, a name defined twice)."""

    def define(cpu_fn: Callable) -> KernelOp:
        _LIB.define(name + torch.library.infer_schema(cpu_fn, mutates_args=tuple(mutates_args)))
        if not mutates_args:
            _LIB.impl(name, _autograd_kernel(getattr(torch.ops.kernelkit, name).default), "Autograd")
        op = KernelOp(name)
        op.register_kernel("cpu")(cpu_fn)
        return op

    return define
