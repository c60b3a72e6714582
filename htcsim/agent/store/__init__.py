"""htcsim/agent/store."""
