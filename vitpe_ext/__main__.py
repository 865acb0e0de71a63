"""`python -m vitpe_ext ...` runs the `vitpe` command line (see cli.py)."""
import sys

from .cli import main

sys.exit(main())
