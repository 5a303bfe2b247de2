"""Stage handlers. What each stage is: :mod:`kafkapipe.stages.registry`; how a worker runs one:
:mod:`kafkapipe.stages.building`. Nothing is imported here, so the supervisor can read the
registry without loading a handler."""
