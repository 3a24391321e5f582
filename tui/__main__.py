"""`python -m tui` runs the kiln command."""

import sys

from tui.cli import main

sys.exit(main())
