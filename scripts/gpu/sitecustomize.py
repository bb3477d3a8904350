"""On the GPU machine: make the wheels installed into /tmp/site importable, .pth files included
(the CuTe DSL needs its .pth; PYTHONPATH alone would skip it)."""

import site

site.addsitedir("/tmp/site")
