"""The errors of the Slurm translation: one line that names the file and line, or the key."""

from __future__ import annotations


class SlurmError(ValueError):
    """Input the translation cannot use: a malformed file (``path:line: what``), a value
    Slurm would refuse, or a policy or cluster that cannot be written for Slurm."""
