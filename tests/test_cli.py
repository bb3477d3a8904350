"""The command line: info, jit warmup/list/clear, and clear errors for bad input."""

import pytest
from click.testing import CliRunner

from kernelkit.cli import main


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


def test_info_lists_backends_and_kernels(cli):
    out = cli("info")
    assert out.exit_code == 0
    for word in ("tvm_ffi", "nvrtc", "cute", "triton", "per_token_group_quant_8bit", "per_tensor_quant_fp8",
                 "w8a8_block_fp8_matmul", "fp8-block", "Fp8BlockScheme (package kernelkit)"):
        assert word in out.output


@pytest.mark.slow
def test_warmup_list_clear_without_a_gpu(cli):
    out = cli("jit", "warmup", "--arch", "sm_90a", "per_token_group_quant_8bit")
    assert out.exit_code == 0, out.output
    assert out.output.count("built") == 14  # 7 specializations x (tvm_ffi, nvrtc)
    again = cli("jit", "warmup", "--arch", "sm_90a", "per_token_group_quant_8bit")
    assert again.output.count("cached") == 14
    listed = cli("jit", "list")
    assert listed.output.count("sm_90a") >= 14 and "per_token_group_quant_8bit<kk::bf16_t" in listed.output
    assert cli("jit", "list", "--arch", "sm_80").output.strip() == "no cached kernels"
    cleared = cli("jit", "clear", "--arch", "sm_90a")
    assert "removed" in cleared.output
    assert cli("jit", "list").output.strip() == "no cached kernels"


def test_bad_arguments_are_usage_errors(cli):
    out = CliRunner().invoke(main, ["jit", "warmup", "--arch", "sm_90a", "no_such_kernel"])
    assert out.exit_code == 2 and "unknown kernel" in out.output
    out = CliRunner().invoke(main, ["jit", "warmup", "--arch", "hopper"])
    assert out.exit_code == 2 and "not a CUDA target" in out.output


def test_warmup_with_jit_disabled_and_nothing_cached_is_one_line(cli, monkeypatch):
    monkeypatch.setenv("KERNELKIT_DISABLE_JIT", "1")
    out = CliRunner().invoke(main, ["jit", "warmup", "--arch", "sm_90a", "per_token_group_quant_8bit"])
    assert out.exit_code == 1 and "Traceback" not in out.output and out.exception.__class__ is SystemExit
    assert "not cached and KERNELKIT_DISABLE_JIT is set" in out.output


def test_info_shows_extras_literally(cli):
    from kernelkit.jit.backends import BACKENDS

    reasons = [b.unavailable_reason() for b in BACKENDS.values()]
    if not any(r and "kernelkit[" in r for r in reasons):
        pytest.skip("every backend is installed here")
    out = cli("info")
    assert "pip install 'kernelkit[" in out.output and "pip install 'kernelkit')" not in out.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message without a GPU")
def test_tune_moe_without_a_gpu_and_with_bad_tokens(cli):
    out = cli("tune", "moe", "--tokens", "1,16")
    assert out.exit_code == 1 and "kernelkit tune moe needs a CUDA GPU" in out.output
    out = cli("tune", "moe", "--tokens", "1,x")
    assert out.exit_code == 2 and "expected comma-separated integers, got '1,x'" in out.output
