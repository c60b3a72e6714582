"""The live agent: the same kernel and policy as the simulator, applied to real processes."""
