#!/usr/bin/env python
"""The end-to-end demo on the bundled data. See `python tools/demo.py --help`."""

import sys

from aligndet_d2.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
