"""htcsim/plan."""
