#!/usr/bin/env python
"""Your images and a few labels in, a pre-trained detector out. See `python tools/recipe.py -h`."""

import sys

from aligndet_d2.cli.recipe import main

if __name__ == "__main__":
    sys.exit(main())
