#!/usr/bin/env python
"""VOC XML or YOLO txt labels to COCO json. See `python tools/convert_labels.py --help`."""

import sys

from aligndet_d2.cli.convert_labels import main

if __name__ == "__main__":
    sys.exit(main())
