"""htcsim/agent/executors/local."""
