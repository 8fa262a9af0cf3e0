"""``python -m tests.faults``: the full fault matrix and the report card (see tests/faults/run.py)."""

import sys

from tests.faults.run import main

sys.exit(main())
