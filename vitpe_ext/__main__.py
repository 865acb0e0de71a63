"""`python -m vitpe_ext ...` runs the `vitpe` command line (see command/cli.py)."""
import sys

from .command.cli import main

sys.exit(main())
