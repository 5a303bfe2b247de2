"""``python -m kafkapipe.dlq``: the dlq tool without the rest of the command line."""

import sys

from kafkapipe.dlq.cli import main

if __name__ == "__main__":
    sys.exit(main())
