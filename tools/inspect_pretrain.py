#!/usr/bin/env python
"""Pictures of what a pre-trained detector learned: `python tools/inspect_pretrain.py --help`."""

import sys

from aligndet_d2.cli.inspect_pretrain import main

if __name__ == "__main__":
    sys.exit(main())
