"""htcsim/agent/api."""
