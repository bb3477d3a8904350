"""FP8 block-wise weights (DeepSeek-V3 layout) with dynamic per-token-group FP8 activations."""
