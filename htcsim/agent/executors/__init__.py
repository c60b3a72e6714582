"""Backends that run jobs for the engine: ``local`` (processes under a shepherd) and ``dask``.

Both implement :class:`htcsim.agent.executors.base.JobExecutor` and share only
the records of ``base``; neither imports the other.
"""
