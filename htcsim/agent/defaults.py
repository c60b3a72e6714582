"""The agent's defaults that the command line needs before any command runs.

Why apart from ``htcsim.agent.config``: the command line declares its options
with these defaults when it starts, and config (psutil, the node inventory)
is imported only inside the agent's commands; this module imports nothing
but pathlib, so ``htcsim submit`` does not pay for the agent's settings.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_PORT = 8642
DEFAULT_STATE_DIR = Path("htcsim-agent")
"""Relative to the current directory: the store, tokens, and the first start's client.toml."""
