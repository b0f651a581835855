"""The ``butler transfer-from-graph`` command of the execution package.

It reaches the ``butler`` CLI through the ``butler.cli`` entry-point group (``pyproject.toml``),
so that ``butler`` itself never imports ``pipeline``. This module imports only click; the
quantum-backed butler code is imported when the command runs.
"""

from __future__ import annotations

import click

__all__ = ["transfer_from_graph"]


@click.command("transfer-from-graph")
@click.argument("graph")
@click.argument("repo")
@click.option(
    "--register-dataset-types", is_flag=True, help="Register the graph's dataset types the repository lacks."
)
@click.option(
    "--update-output-chain",
    is_flag=True,
    help="Create/update the graph's CHAINED output collection (run first).",
)
def transfer_from_graph(
    graph: str, repo: str, register_dataset_types: bool, update_output_chain: bool
) -> None:
    """Register the outputs that 'pipetask run-qbb' wrote for GRAPH into REPO (safe to run again)."""
    from .qbb import transfer_from_graph as _transfer

    r = _transfer(
        graph, repo, register_dataset_types=register_dataset_types, update_output_chain=update_output_chain
    )
    click.echo(
        f"Registered {r.n_registered} dataset(s) from {r.n_done} of {r.n_quanta} finished quanta "
        f"({r.n_already} already registered)"
        + (f"; they include the logs of {r.n_failed_logs} failed quanta" if r.n_failed_logs else "")
        + (f"; {r.chain[0]} is first in the output chain" if r.chain else "")
    )
