"""``python -m kernelkit`` runs the CLI."""

from kernelkit.cli import main

main()
