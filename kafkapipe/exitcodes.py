"""Exit statuses of every kafkapipe process and command (docs/contract.md, "Commands, exit status").

The supervisor reads a worker's status by these numbers (gunicorn's convention for boot
failures), and systemd's ``RestartPreventExitStatus=2`` relies on EXIT_CONFIG.
"""

EXIT_OK = 0
EXIT_FAILURE = 1  # a runtime failure: worth another try
EXIT_CONFIG = 2  # a configuration or usage error: no restart can fix it
EXIT_USAGE = EXIT_CONFIG
EXIT_BOOT_ERROR = 3  # a worker could not set up its storage or broker credentials
