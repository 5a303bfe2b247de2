"""The supervisor's supporting pieces; :mod:`kafkapipe.supervisor` is the arbiter that uses them."""
