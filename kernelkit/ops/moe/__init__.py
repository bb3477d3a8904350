"""Mixture-of-experts ops: routing and the expert MLPs (plain torch so far; fused kernels come with the MoE scheme)."""
