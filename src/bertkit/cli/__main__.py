"""`python -m bertkit.cli ...`, the same as `bertkit ...`."""

import sys

from bertkit.cli import main

sys.exit(main())
