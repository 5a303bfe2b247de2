"""Moving from the Delta-table pipeline: its retry queue onto our topics, its inventory into ours.

See ``docs/cutover.md`` for the runbook these commands serve.
"""
