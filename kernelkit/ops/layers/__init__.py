"""Fused layer ops of the decoder: RMSNorm (with residual add), SiLU-and-mul, rotary embedding."""
