"""Model-level evaluation: loading HF-format checkpoints with kernelkit's quantized layers, perplexity."""
