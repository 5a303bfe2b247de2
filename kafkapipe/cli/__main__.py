"""``python -m kafkapipe.cli``: the same as the ``kafkapipe`` command."""

import sys

from kafkapipe.cli.main import main

sys.exit(main())
