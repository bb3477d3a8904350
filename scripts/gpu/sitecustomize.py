"""On the GPU machine: make the wheels installed into /tmp/site importable, .pth files included
(the CuTe DSL needs its .pth; PYTHONPATH alone would skip it), ahead of the image's own packages, so a
carried newer version (e.g. anyio for the serving stack) wins over an older one already installed."""

import site
import sys

_before = list(sys.path)
site.addsitedir("/tmp/site")
sys.path[:] = [p for p in sys.path if p not in _before] + _before
