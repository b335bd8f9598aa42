#!/usr/bin/env python
"""Cluster pseudo-labels of proposals for DETR pre-training. See `python tools/cluster_proposals.py
--help`."""

import sys

from aligndet_d2.cli.cluster_proposals import main

if __name__ == "__main__":
    sys.exit(main())
