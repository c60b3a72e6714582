"""htcsim/cli."""
