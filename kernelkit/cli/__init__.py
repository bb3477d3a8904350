"""The ``kernelkit`` command line."""

from __future__ import annotations

import click

from kernelkit import __version__
from kernelkit.cli.bench import bench
from kernelkit.cli.convert import convert_cmd
from kernelkit.cli.demo import demo, model_path
from kernelkit.cli.eval import eval_group
from kernelkit.cli.info import info
from kernelkit.cli.jit import jit
from kernelkit.cli.serve import generate_cmd, serve_cmd
from kernelkit.cli.tune import tune


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kernelkit")
def main() -> None:
    """GPU kernels and weight quantization for LLM inference."""


main.add_command(info)
main.add_command(jit)
main.add_command(demo)
main.add_command(convert_cmd)
main.add_command(eval_group)
main.add_command(model_path)
main.add_command(serve_cmd)
main.add_command(generate_cmd)
main.add_command(tune)
main.add_command(bench)
