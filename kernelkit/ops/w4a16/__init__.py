"""W4A16 GEMM: 4-bit AWQ weights times 16-bit activations."""
