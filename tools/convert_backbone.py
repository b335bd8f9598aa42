#!/usr/bin/env python
"""Convert an image-domain ResNet checkpoint to Detectron2. See `python tools/convert_backbone.py
--help`."""

import sys

from aligndet_d2.cli.convert_backbone import main

if __name__ == "__main__":
    sys.exit(main())
