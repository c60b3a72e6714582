"""htcsim/agent/executors/dask."""
