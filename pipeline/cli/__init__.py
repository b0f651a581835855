"""The ``pipetask`` command line (the ``ctrl_mpexec`` role).

`pipeline.cli.pipetask` holds the click group and ``build``; `pipeline.cli.graph_commands` the
commands that build and run quantum graphs (``qgraph``, ``run``, ``pre-exec-init-qbb``,
``run-qbb``), imported only when invoked; `pipeline.cli.options` the shared options.
"""

from __future__ import annotations

from .pipetask import main, pipetask

__all__ = ["main", "pipetask"]
