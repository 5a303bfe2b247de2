"""``python -m kafkapipe …`` is the ``kafkapipe`` command."""

from kafkapipe.cli import main

raise SystemExit(main())
