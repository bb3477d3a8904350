"""A device without tuned launch-config files takes those of another device of its chip (the H100 SXM the
H200's, and back), for the fused MoE and the block-FP8 GEMM alike; other devices get only their own files."""

import json

from kernelkit.ops.gemm import configs as gemm_configs
from kernelkit.ops.moe import configs as moe_configs
from kernelkit.ops.tuned_devices import devices_to_try

H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"


def test_devices_to_try():
    assert devices_to_try(H100) == (H100, H200)
    assert devices_to_try(H200) == (H200, H100)
    assert devices_to_try("NVIDIA H100 PCIe") == ("NVIDIA H100 PCIe",)


def test_an_h100_takes_the_committed_h200_moe_configs():
    assert (moe_configs.CONFIG_DIR / moe_configs.config_file_name(128, 768, H200, "int8_w8a8")).is_file()
    assert not (moe_configs.CONFIG_DIR / moe_configs.config_file_name(128, 768, H100, "int8_w8a8")).exists()
    for tokens in (1, 64, 4096):
        h200 = moe_configs.get_config(tokens, 8, 128, 768, H200, "int8_w8a8")
        assert moe_configs.get_config(tokens, 8, 128, 768, H100, "int8_w8a8") == h200
    assert moe_configs.get_config(1, 8, 128, 768, "NVIDIA A100-SXM4-80GB", None) == \
        moe_configs.default_config(1, 8, 128)


def test_an_h100_takes_the_committed_h200_gemm_configs():
    """(6144, 4096) has an H200 file and no H100 one; (4096, 4096) has its own H100 file, which wins."""
    assert (gemm_configs.CONFIG_DIR / gemm_configs.config_file_name(6144, 4096, H200, (128, 128))).is_file()
    assert not (gemm_configs.CONFIG_DIR / gemm_configs.config_file_name(6144, 4096, H100, (128, 128))).is_file()
    for m in (1, 64, 4096):
        h200 = gemm_configs.get_config(m, 6144, 4096, H200, (128, 128))
        assert gemm_configs.get_config(m, 6144, 4096, H100, (128, 128)) == h200
    own = json.loads((gemm_configs.CONFIG_DIR / gemm_configs.config_file_name(4096, 4096, H100, (128, 128)))
                     .read_text())
    assert gemm_configs.get_config(16, 4096, 4096, H100, (128, 128)) == own["16"]
    assert gemm_configs.get_config(1, 4096, 4096, "NVIDIA L4", (128, 128)) == \
        gemm_configs.default_config(1, 4096, 4096, (128, 128))
