"""JIT cache behaviour: keys, single compilation across processes, corruption, fallbacks, disabled JIT.

Most builds here go through the NVRTC backend (0.1 s a compile), which exercises the same cache code as
nvcc builds; test_kernels_src.py covers nvcc itself.
"""

import dataclasses
import logging
import multiprocessing as mp
import os
import re
import tempfile
from pathlib import Path

import pytest
import torch

from kernelkit.jit import CompileError, JitDisabled, cache, ensure_built, parse_target
from kernelkit.jit.key import source_digest
from kernelkit.ops.dispatch import run_first
from kernelkit.ops.quant import cuda_impl

SM90A = parse_target("sm_90a")
SPEC = cuda_impl.spec("nvrtc", torch.bfloat16, torch.int8, 64, False)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_same_inputs_hit_the_cache(fresh_cache, kernelkit_logs):
    path, built = ensure_built(SPEC, SM90A)
    assert built and path.is_relative_to(fresh_cache / "sm_90a" / "nvrtc")
    assert any("compiling" in r.message and "sm_90a" in r.message for r in kernelkit_logs.records)
    assert ensure_built(SPEC, SM90A) == (path, False)


def test_flags_args_and_arch_make_new_entries(fresh_cache):
    base, _ = ensure_built(SPEC, SM90A)
    flagged, built = ensure_built(dataclasses.replace(SPEC, flags=("-DKK_UNUSED=1",)), SM90A)
    other_args, built2 = ensure_built(cuda_impl.spec("nvrtc", torch.bfloat16, torch.int8, 128, False), SM90A)
    plain_sm90, built3 = ensure_built(SPEC, parse_target("sm_90"))
    assert built and built2 and built3
    assert len({base, flagged, other_args, plain_sm90}) == 4
    assert plain_sm90.is_relative_to(fresh_cache / "sm_90")


def test_key_follows_header_contents_not_mtimes(tmp_path):
    (tmp_path / "inner.cuh").write_text("#pragma once\nconstexpr int k = 1;\n")
    (tmp_path / "outer.cuh").write_text('#include "inner.cuh"\n')
    digest = source_digest(tmp_path / "outer.cuh", (tmp_path,), tmp_path)
    os.utime(tmp_path / "inner.cuh", (1, 1))
    assert source_digest(tmp_path / "outer.cuh", (tmp_path,), tmp_path) == digest
    (tmp_path / "inner.cuh").write_text("#pragma once\nconstexpr int k = 2;\n")
    assert source_digest(tmp_path / "outer.cuh", (tmp_path,), tmp_path) != digest


def _build_in_child(cache_dir, lock_dir, barrier, results):
    os.environ["KERNELKIT_CACHE_DIR"] = cache_dir
    os.environ["KERNELKIT_LOCK_DIR"] = lock_dir
    barrier.wait()
    path, built = ensure_built(SPEC, SM90A)
    results.put((str(path), built))


def test_eight_processes_compile_once(fresh_cache, tmp_path):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_build_in_child,
                         args=(str(fresh_cache), os.environ["KERNELKIT_LOCK_DIR"], barrier, results))
             for _ in range(8)]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len({path for path, _ in out}) == 1
    assert sum(built for _, built in out) == 1


def test_corrupt_or_incomplete_entries_are_rebuilt(fresh_cache):
    path, _ = ensure_built(SPEC, SM90A)
    cubin = path / "kernel.cubin"
    cubin.write_bytes(cubin.read_bytes()[:100])  # truncated
    assert [e.valid for e in cache.list_entries()] == [False]
    path2, built = ensure_built(SPEC, SM90A)
    assert built and path2 == path and cache.read_manifest(path) is not None
    (path / cache.MANIFEST).unlink()  # as if a build died before committing
    assert ensure_built(SPEC, SM90A) == (path, True)


def test_read_only_cache_dir_falls_back(tmp_path, monkeypatch, kernelkit_logs):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("KERNELKIT_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    root = cache.cache_root()
    assert root.is_relative_to(tmp_path / "tmp")
    assert any("not writable" in r.message for r in kernelkit_logs.records)
    assert ensure_built(SPEC, SM90A)[0].is_relative_to(root)


def test_compile_failure_reports_compiler_message_and_log(fresh_cache):
    bad = cuda_impl.spec("nvrtc", torch.bfloat16, torch.int8, 48, False)  # 48: no power-of-two reduction
    with pytest.raises(CompileError) as info:
        ensure_built(bad, SM90A)
    assert "group size must be a power of two" in str(info.value)
    assert info.value.log_path and Path(info.value.log_path).read_text()
    assert not any(e.valid for e in cache.list_entries())


def test_failed_compile_falls_back_with_one_warning(fresh_cache, kernelkit_logs):
    bad = cuda_impl.spec("nvrtc", torch.float16, torch.int8, 48, False)
    impls = (("nvrtc-48", lambda: None, lambda: ensure_built(bad, SM90A)), ("plan-b", lambda: None, lambda: 42))
    assert run_first("test_op", impls) == 42
    assert run_first("test_op", impls) == 42
    warnings = [r for r in kernelkit_logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "test_op fell back from its nvrtc-48" in warnings[0].message


def test_disabled_jit_lists_missing_kernels(fresh_cache, monkeypatch):
    monkeypatch.setenv("KERNELKIT_DISABLE_JIT", "1")
    with pytest.raises(JitDisabled, match=rf"(?s){re.escape(SPEC.label)}.*missing"):
        ensure_built(SPEC, SM90A)
    monkeypatch.delenv("KERNELKIT_DISABLE_JIT")
    path, _ = ensure_built(SPEC, SM90A)
    monkeypatch.setenv("KERNELKIT_DISABLE_JIT", "1")
    assert ensure_built(SPEC, SM90A) == (path, False)


def test_toolchain_memo_survives_concurrent_first_use(fresh_cache):
    from concurrent.futures import ThreadPoolExecutor

    from kernelkit.jit.backends import tvm_ffi

    tvm_ffi.nvcc_version.cache_clear()
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda _: tvm_ffi.nvcc_version.__wrapped__(), range(8)))
    assert len(set(versions)) == 1 and versions[0].startswith("Build cuda_")
    assert (fresh_cache / "toolchains.json").is_file()


def test_triton_cache_is_routed_per_architecture(fresh_cache, monkeypatch):
    import triton

    from kernelkit.jit.backends import get_backend
    from kernelkit.jit.backends import triton as triton_backend

    monkeypatch.setenv("TRITON_CACHE_DIR", triton.knobs.cache.dir)  # restored after the test
    monkeypatch.setattr(triton_backend, "_routed", set())
    monkeypatch.setattr(triton_backend, "_USER_CACHE_DIR", None)
    get_backend("triton").route_cache(SM90A)
    assert triton.knobs.cache.dir == str(fresh_cache / "sm_90a" / "triton")
    get_backend("triton").route_cache(parse_target("sm_90"))
    assert triton.knobs.cache.dir == str(fresh_cache / "sm_90" / "triton")
    monkeypatch.setattr(triton_backend, "_USER_CACHE_DIR", "/somewhere/else")
    get_backend("triton").route_cache(parse_target("sm_100a"))
    assert triton.knobs.cache.dir == str(fresh_cache / "sm_90" / "triton")  # the user's own setting wins


def test_clear_removes_only_what_kernelkit_created(fresh_cache):
    from click.testing import CliRunner

    from kernelkit.cli import main

    (fresh_cache / "pip").mkdir(parents=True)
    (fresh_cache / "pip" / "wheel.whl").write_text("not kernelkit's")
    (fresh_cache / "sm_80" / "nvrtc").mkdir(parents=True)  # a target-like name kernelkit did not create
    (fresh_cache / "notes.txt").write_text("mine")
    built, _ = ensure_built(SPEC, SM90A)
    assert [e.path for e in cache.list_entries()] == [built]
    out = CliRunner().invoke(main, ["jit", "clear"])
    assert out.exit_code == 0, out.output
    assert f"removed {fresh_cache / 'sm_90a'}" in out.output and "sm_80: not created by kernelkit" in out.output
    assert not (fresh_cache / "sm_90a").exists()
    assert (fresh_cache / "pip" / "wheel.whl").read_text() == "not kernelkit's"
    assert (fresh_cache / "sm_80" / "nvrtc").is_dir() and (fresh_cache / "notes.txt").is_file()
    bad = CliRunner().invoke(main, ["jit", "clear", "--arch", "../../etc"])
    assert bad.exit_code == 2 and "not a CUDA target" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize("how", ["world-writable", "other owner"])
def test_fallback_cache_refuses_a_directory_others_control(tmp_path, monkeypatch, how, kernelkit_logs):
    if how == "other owner" and os.getuid() != 0:
        pytest.skip("chown to another user needs root")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("KERNELKIT_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(cache, "_private_fallbacks", {})
    planted = tmp_path / "tmp" / f"kernelkit-cache-{os.getuid()}"
    planted.mkdir(parents=True)
    # What another user planted where the fallback is predictable: a "valid" entry for our key.
    monkeypatch.setenv("KERNELKIT_CACHE_DIR", str(planted / cache.__version__))
    plant, _ = ensure_built(SPEC, SM90A)
    monkeypatch.setenv("KERNELKIT_CACHE_DIR", str(blocker / "cache"))
    if how == "world-writable":
        planted.chmod(0o777)
    else:
        planted.chmod(0o700)
        os.chown(planted, 65534, 65534)
    path, built = ensure_built(SPEC, SM90A)
    assert built and not path.is_relative_to(planted) and path != plant
    assert (path.parents[3].stat().st_mode & 0o077) == 0  # the mkdtemp directory replacing it is private
    assert any("refusing to trust" in r.message for r in kernelkit_logs.records)


def test_read_only_warmed_cache_is_read(fresh_cache, monkeypatch, tmp_path):
    warmed, _ = ensure_built(SPEC, SM90A)
    # A deployment's cache mounted read-only (root ignores permission bits, so say so directly).
    monkeypatch.setattr(cache, "_writable", lambda path: path != fresh_cache)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("KERNELKIT_DISABLE_JIT", "1")
    assert ensure_built(SPEC, SM90A) == (warmed, False)
    other = cuda_impl.spec("nvrtc", torch.bfloat16, torch.int8, 128, False)
    with pytest.raises(JitDisabled, match="not cached"):
        ensure_built(other, SM90A)
    monkeypatch.delenv("KERNELKIT_DISABLE_JIT")
    path, built = ensure_built(other, SM90A)  # new kernels go to the writable fallback
    assert built and path.is_relative_to(tmp_path / "tmp")
