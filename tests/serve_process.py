"""Start ``kernelkit serve`` as a subprocess on a free loopback port, for HTTP tests."""

import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, *args) -> tuple[subprocess.Popen, str]:
    """(process, base URL) once /health answers; RuntimeError with the server's output if it exits first."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kernelkit", "serve", "--model", str(model), "--port", str(port),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read())
    raise RuntimeError("server did not start")
