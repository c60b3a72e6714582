"""htcsim/agent/shadow."""
