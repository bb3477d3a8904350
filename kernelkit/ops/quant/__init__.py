"""8-bit activation quantizers: per-token-group (FP8/int8), per-token int8, per-tensor FP8."""
