"""``kafkapipe status``: is it healthy, how far behind, how big are the DLQs.

- :mod:`~kafkapipe.status.scrape`: the supervisor's ``/metrics`` (workers, circuits, holds).
- :mod:`~kafkapipe.status.backlog`: the broker's view (group state, backlog, retry waits, DLQ sizes).
- :mod:`~kafkapipe.status.render`: text and ``--json``; :mod:`~kafkapipe.status.cli` the command.
"""
