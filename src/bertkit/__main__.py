"""`python -m bertkit ...` (and `torchrun -m bertkit pretrain ...`) run the command line."""

import sys

from bertkit.cli import main

sys.exit(main())
