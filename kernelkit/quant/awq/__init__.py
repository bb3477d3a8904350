"""AWQ W4A16: asymmetric 4-bit weights in groups along K, in AutoAWQ GEMM and compressed-tensors pack-quantized form."""
