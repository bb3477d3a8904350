"""Repository invariants: CI runs the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    blocks = ROOT.joinpath("README.md").read_text().split("```bash\n")[1:]
    return [block.split("```")[0].strip() for block in blocks]


def test_readme_opens_with_two_commands_and_ci_runs_the_second():
    readme = ROOT.joinpath("README.md").read_text()
    first_two = _readme_commands()[:2]
    assert readme.split("\n", 1)[1].lstrip().startswith("```bash"), "the README must open with the commands"
    assert all("\n" not in command for command in first_two)
    ci_commands = [line for line in ROOT.joinpath(".ci/run").read_text().splitlines()
                   if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_commands == [first_two[1]]


def test_ruff_is_clean():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_package_is_listed_in_pyproject():
    import tomllib

    listed = set(tomllib.loads(ROOT.joinpath("pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.joinpath("kernelkit").rglob("__init__.py")}
    assert found | {"kernelkit._kernels_src"} == listed
