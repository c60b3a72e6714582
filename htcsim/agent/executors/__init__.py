"""htcsim/agent/executors."""
