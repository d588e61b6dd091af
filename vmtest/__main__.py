"""`python -m vmtest`: the vmtest command."""

import sys

from vmtest.cli import main

sys.exit(main())
