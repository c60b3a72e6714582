"""The agent's single-writer engine: one thread owns the kernel, the store's writer and the
executor.

Admission, recovery after a restart, the node inventory, pipelines
(``workflow``), accounting reports and the decision-log replay live here;
the API only sends it commands.
"""
