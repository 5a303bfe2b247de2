"""The supervisor's supporting pieces; :mod:`kafkapipe.supervisor` is the arbiter that uses them.

Nothing here imports prometheus_client when imported: the supervisor must set
``PROMETHEUS_MULTIPROC_DIR`` first (see :mod:`kafkapipe.supervision.metricsdir`).
"""
