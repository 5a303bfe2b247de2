"""``kafkapipe trace TRACE_ID``: everything the pipeline knows about one claim's attachments.

- :mod:`~kafkapipe.trace.model`: what one attachment's history holds, and where it is now.
- :mod:`~kafkapipe.trace.collect`: gathering it from the inventory, the retry topics and both DLQs.
- :mod:`~kafkapipe.trace.render`: the text and ``--json`` outputs.
- :mod:`~kafkapipe.trace.cli`: argparse wiring and exit codes.
"""
