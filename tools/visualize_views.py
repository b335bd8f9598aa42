#!/usr/bin/env python
"""The two pre-training views of images side by side. See `python tools/visualize_views.py -h`."""

import sys

from aligndet_d2.cli.visualize_views import main

if __name__ == "__main__":
    sys.exit(main())
