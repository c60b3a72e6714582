"""Jobs in, no policy: SWF logs, Slurm's sacct, the trace catalog and synthetic generators."""
