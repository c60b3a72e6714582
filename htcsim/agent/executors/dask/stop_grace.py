"""A stopping Dask worker gives its jobs a grace: SIGTERM, then SIGKILL.

Why: deleting a worker's pod (or ``scancel`` of its batch job) sends SIGTERM
to the worker's nanny, which would kill the worker process at once, and the
job guard would then SIGKILL every job: a job's TERM trap (checkpoint, clean
up) never ran. The agent registers this plugin with every nanny; the nanny
awaits its ``teardown`` before it stops the worker, and the teardown asks
its worker to stop its jobs (``worker.stop_jobs``: SIGTERM, ``grace_s``,
SIGKILL) without reporting their exits, so that the worker's loss, which
follows, requeues them (or ends them ``node_fail``) by the policy, as for
any lost node, and never while they still run. The grace must end before
the platform's own (a pod's ``terminationGracePeriodSeconds``). A worker
without a nanny (``--no-nanny``) has no such hook: its jobs are killed when
it stops.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import NannyPlugin
from distributed.protocol.pickle import dumps

from htcsim.agent.executors.dask import worker as dask_worker

PLUGIN_NAME = "htcsim-stop-grace"


class StopGrace(NannyPlugin):
    """Before the nanny stops its worker: the worker's jobs get SIGTERM and
    ``grace_s`` seconds, then SIGKILL."""

    name = PLUGIN_NAME

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s

    async def teardown(self, nanny: Any) -> None:
        address = getattr(nanny, "worker_address", None)
        if not address:
            return
        await nanny.rpc(address).run(
            function=dumps(dask_worker.stop_jobs), args=dumps((self.grace_s,))
        )
