"""htcsim/report."""
