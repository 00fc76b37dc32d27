"""``python -m lib``: Kestrel's command line (see lib/cli.py)."""

import sys

from lib.cli import main

sys.exit(main())
