"""``kafkapipe dlq list | show | stats | replay | ack``: the operator's tool over both DLQs (``--events``).

- :mod:`~kafkapipe.dlq.reading`: bounded, assign-only reads; the review group and its "reviewed up to here" mark.
- :mod:`~kafkapipe.dlq.entries`: one dead letter, decoded, and the selections commands make.
- :mod:`~kafkapipe.dlq.selection`: the filters every command shares; newest first.
- :mod:`~kafkapipe.dlq.stats`: ``stats``.
- :mod:`~kafkapipe.dlq.browse`: ``list`` and ``show``; :mod:`~kafkapipe.dlq.render` their output.
- :mod:`~kafkapipe.dlq.replay`: ``replay``; :mod:`~kafkapipe.dlq.replaylog` why it never sends twice.
- :mod:`~kafkapipe.dlq.ack`: ``ack``.
- :mod:`~kafkapipe.dlq.audit`: the audit record every ``replay`` and ``ack`` appends to a file and logs.
- :mod:`~kafkapipe.dlq.cli`: argparse wiring, exit codes.
"""

from kafkapipe.dlq.cli import add_parser, add_subcommands, main, run
from kafkapipe.dlq.reading import review_group
from kafkapipe.dlq.replaylog import replay_log_spec, replay_log_topic

__all__ = ["add_parser", "add_subcommands", "main", "replay_log_spec", "replay_log_topic", "review_group", "run"]
