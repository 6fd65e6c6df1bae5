"""Process exit codes of `syncbit-reconcile` (DESIGN §7), in a module that imports nothing.

The CLI needs them before it knows which command runs; taking them from the engine made every
command, `validate` included, load libtorrent and aiohttp just to name an integer.
"""

from __future__ import annotations

EXIT_READY = 0  # converged: every dataset placed here is Ready
EXIT_NOT_READY = 1  # a pass ran but something is not Ready (or this node is not in the state)
EXIT_USAGE = 2  # usage or node-config error
EXIT_REJECTED = 3  # the desired state did not validate
