#!/usr/bin/env python
"""Selective-search proposals: generate, check and draw. See `python tools/proposals.py --help`."""

import sys

from aligndet_d2.cli.proposals import main

if __name__ == "__main__":
    sys.exit(main())
