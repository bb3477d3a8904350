"""kernelkit's logger: one stderr line per event, INFO by default (``$KERNELKIT_LOG_LEVEL`` overrides).

Cold compiles and implementation fallbacks are logged here; they must be visible without any logging
set-up on the user's side, so the ``kernelkit`` logger gets its own handler unless one is already attached.
"""

import logging
import os

logger = logging.getLogger("kernelkit")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("kernelkit %(levelname)s: %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(os.environ.get("KERNELKIT_LOG_LEVEL", "INFO").upper())
    logger.propagate = False
