#!/usr/bin/env python
"""Detections of a trained model on new images. See `python tools/predict.py --help`."""

import sys

from aligndet_d2.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
