"""``python -m dmole_lab`` is the ``dmole-lab`` command."""

import sys

from dmole_lab.cli import main

sys.exit(main())
