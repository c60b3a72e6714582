"""``htcsim policy``: write the default policy file, or check and show one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from htcsim.cli import _paths
from htcsim.cli._console import console, escape, fail

policy_app = typer.Typer(help="Write or check a policy file (TOML).", no_args_is_help=True)


@policy_app.command("init")
def policy_init(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: print it).")
    ] = None,
) -> None:
    """Write the default policy, every key documented."""
    from htcsim.policy import DEFAULT_POLICY_TOML

    if output is None:
        typer.echo(DEFAULT_POLICY_TOML, nl=False)
        return
    _paths.output_file(output, "--output", overwrite=False)
    try:
        output.write_text(DEFAULT_POLICY_TOML, encoding="utf-8")
    except OSError as exc:
        raise _paths.write_failed(output, "--output", exc) from exc
    console.print(f"[green]wrote[/] {escape(output)}")


@policy_app.command("show")
def policy_show(
    path: Annotated[Path, typer.Argument(help="Policy file (TOML).")],
) -> None:
    """Check a policy file and print it with every value, defaults included."""
    from htcsim.policy import PolicyError, load_policy, policy_to_toml

    _paths.input_file(path, "")
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        raise fail(str(exc)) from exc
    console.print(f"[bold]{escape(path)}[/]: valid ({escape(policy.label)})")
    typer.echo(policy_to_toml(policy), nl=False)
