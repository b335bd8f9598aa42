#!/usr/bin/env python
"""Low-data splits of a COCO json. See `python tools/low_data_splits.py --help`."""

import sys

from aligndet_d2.cli.low_data_splits import main

if __name__ == "__main__":
    sys.exit(main())
