"""Errors of ``kernelkit convert``; each message names the file or tensor at fault."""


class ConvertError(ValueError):
    """A checkpoint that cannot be converted as asked: corrupt, inconsistent, unsupported or already quantized."""
