#!/usr/bin/env python
"""Export a pre-training checkpoint for fine-tuning. See `python tools/export.py --help`."""

import sys

from aligndet_d2.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
