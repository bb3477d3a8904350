"""Block-scaled FP8 GEMM (DeepSeek-V3 W8A8 layout)."""
