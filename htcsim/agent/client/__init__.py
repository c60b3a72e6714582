"""The agent's client: the HTTP client and the ``htcsim submit/queue/...`` commands.

It imports neither the simulator nor numpy nor polars, so a client command
starts in a fraction of a second.
"""
