"""``python -m dmole_lab`` is the ``dmole-lab`` command."""

import sys

from .cli import main

sys.exit(main())
