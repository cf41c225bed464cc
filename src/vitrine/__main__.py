"""`python -m vitrine ...` runs the CLI."""

import sys

from vitrine.cli import main

sys.exit(main())
