"""Start ``kernelkit serve`` as a subprocess on a free loopback port, for HTTP tests."""

import contextlib
import functools
import socket
import subprocess
import sys
import threading
import time

import httpx

# Test-only fault injection: runs in the server process before the CLI. A batch holding a sequence whose
# prompt starts with POISON makes the forward step raise FAULT (a kernel failing, as a user would see it).
POISON = [7, 7, 7, 7]
_INJECT = """
from kernelkit.serve.runner import ModelRunner
_run = ModelRunner.run
def _poisoned(self, batch, *args, **kwargs):
    if any(s.token_ids[:4] == {poison} for s in batch.seqs):
        raise {fault}
    return _run(self, batch, *args, **kwargs)
ModelRunner.run = _poisoned
"""


def _output(proc: subprocess.Popen, reader: threading.Thread) -> str:
    """What the server printed so far (all of it once it has exited)."""
    if proc.poll() is not None:
        reader.join(timeout=10)
    return "".join(proc.lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, *args, fault: str | None = None) -> tuple[subprocess.Popen, str]:
    """(process, base URL) once /health answers; RuntimeError with the server's output if it exits first.
    ``fault``: an exception expression the forward step raises for prompts starting with ``POISON``."""
    port = free_port()
    cli = ["serve", "--model", str(model), "--port", str(port), *args]
    if fault is None:
        command = [sys.executable, "-m", "kernelkit", *cli]
    else:
        code = _INJECT.format(poison=POISON, fault=fault) + f"import sys\nsys.argv = ['kernelkit', *{cli!r}]\n" \
            "from kernelkit.cli import main\nmain()\n"
        command = [sys.executable, "-c", code]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc.lines = []  # the server's output, read as it comes so that a full pipe never blocks the server
    reader = threading.Thread(target=lambda: proc.lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    proc.output = functools.partial(_output, proc, reader)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(proc.output())
    raise RuntimeError("server did not start")


@contextlib.contextmanager
def serving(model, *args, fault: str | None = None):
    """``start_server`` for the length of a ``with`` block: yields (process, URL); terminates it after."""
    proc, url = start_server(model, *args, fault=fault)
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


def metric(url: str, name: str) -> float:
    """One value of the server's Prometheus /metrics."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)
