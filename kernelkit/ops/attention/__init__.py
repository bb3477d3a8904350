"""Paged attention over a block-table KV cache: a prefill kernel (any query length), a split-KV decode kernel
(one new token per sequence), and their torch reference."""
