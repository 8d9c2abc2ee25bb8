"""`python -m kstruct.cli` runs the `kstruct` command."""

import sys

from kstruct.cli import main

sys.exit(main())
