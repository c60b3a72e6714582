"""``htcsim nodes``: the agent's nodes, their states and free resources, and
``nodes drain`` / ``nodes resume`` to take a node out of service and back
(admin), as Slurm's sinfo and scontrol's drain and resume are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from htcsim.agent.client._output import (
    JsonOption,
    _agent,
    _mib,
    _print_json,
    _print_table,
    _table,
    console,
    escape,
)

if TYPE_CHECKING:
    from htcsim.agent.client.http import AgentClient

nodes_app = typer.Typer(
    help="Node states and free resources; drain or resume a node (admin).",
    invoke_without_command=True,
)
"""``htcsim nodes``: lists the nodes when called alone; ``drain`` and ``resume``."""


@nodes_app.callback()
def nodes_command(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Nodes: type, state (idle, mixed, allocated, draining, drained, down; booting
    and off in a cluster manager's pool) and free resources."""
    if ctx.invoked_subcommand is not None:
        return
    with _agent() as client:
        nodes = client.nodes()
    if json_out:
        _print_json(nodes)
        return
    table = _table("NODE", "TYPE", "STATE", "CORES FREE", "MEM FREE", "GPUS FREE", "JOBS")
    for node in nodes:
        cap, free = node["capacity"], node["free"]
        table.add_row(
            escape(str(node["name"])),
            escape(str(node.get("type", ""))),
            str(node["state"]),
            f"{free['cores']}/{cap['cores']}",
            f"{_mib(free['mem_mib'])}/{_mib(cap['mem_mib'])}",
            f"{free.get('gpus', 0)}/{cap.get('gpus', 0)}",
            ",".join(str(j) for j in node.get("jobs", [])) or "-",
        )
    _print_table(table)


def _node_state(client: AgentClient, name: str) -> str:
    """The node's state as ``htcsim nodes`` shows it (idle, draining, drained...): the
    drain and resume routes answer with the kernel's names (up, off), which differ."""
    for node in client.nodes():
        if node["name"] == name:
            return str(node["state"])
    return "?"


NodeArgument = Annotated[str, typer.Argument(help="The node's name (see `htcsim nodes`).")]


@nodes_app.command("drain")
def drain_command(node: NodeArgument) -> None:
    """No new job on NODE; it is drained once its jobs end (admin)."""
    with _agent() as client:
        client.drain(node)
        console.print(f"{node}: {_node_state(client, node)}")


@nodes_app.command("resume")
def resume_command(node: NodeArgument) -> None:
    """Put NODE back in service (admin)."""
    with _agent() as client:
        client.resume(node)
        console.print(f"{node}: {_node_state(client, node)}")
