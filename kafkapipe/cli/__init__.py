"""``kafkapipe …``: the operator's command line.

:mod:`~kafkapipe.cli.main` builds the argparse tree and dispatches; the larger command groups
live beside it (:mod:`~kafkapipe.cli.inventory`, :mod:`~kafkapipe.cli.migrate`,
:mod:`~kafkapipe.cli.urlcheck`), the defaults every command shares in
:mod:`~kafkapipe.cli.defaults`. ``dlq``, ``status`` and ``trace`` keep their commands in their
own packages.
"""

from kafkapipe.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
