"""``kernelkit bench``: kernelkit's kernels beside their baselines at the user's own shapes, on this GPU."""
