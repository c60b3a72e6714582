"""The agent's defaults that the command line needs before any command runs.

Why apart from ``htcsim.agent.config``: the command line declares its options
with these defaults when it starts, and config (psutil, the node inventory)
is imported only inside the agent's commands; this module imports nothing
but os and pathlib, so ``htcsim submit`` does not pay for the agent's settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_PORT = 8642
DEFAULT_STATE_DIR = Path("htcsim-agent")
"""Relative to the current directory: the store, tokens, and the first start's client.toml."""


def user_client_file(environ: Mapping[str, str] | None = None) -> Path:
    """The user's client settings, found from any directory:
    ``$XDG_CONFIG_HOME/htcsim/client.toml``, by default ``~/.config/htcsim/client.toml``
    (a relative ``XDG_CONFIG_HOME`` is ignored, as the XDG specification says)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path("~/.config").expanduser()
    return root / "htcsim" / "client.toml"
