"""htcsim/agent/client."""
