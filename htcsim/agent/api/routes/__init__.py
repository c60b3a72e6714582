"""The agent's routes, one ``APIRouter`` per resource.

``agent`` (liveness, whoami), ``jobs``, ``workflows``, ``nodes``,
``cluster``, ``policy``, ``shadow`` and ``metrics``; ``create_app``
includes each module's ``router`` in that order, which is the order of the
paths in the published schema.
"""
