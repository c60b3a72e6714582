"""htcsim/agent/engine."""
