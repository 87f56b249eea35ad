"""``python -m fruitstream``: the same as the ``fruitstream`` command."""

import sys

from fruitstream.entrypoints.cli import main

sys.exit(main())
