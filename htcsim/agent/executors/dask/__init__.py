"""Jobs on Dask workers, each worker a node: the executor, the worker-side runner, the guard
process that kills a dead worker's jobs, and the pool scaled through a Dask cluster manager."""
