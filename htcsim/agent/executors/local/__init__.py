"""Jobs as local processes: the shepherd that starts, watches and reaps them, and its limits."""
