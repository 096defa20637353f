"""Entry point: python -m hardware report|sample (see hardware/cli.py)."""

import sys

from hardware.cli import main

sys.exit(main())
