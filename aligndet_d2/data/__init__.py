"""Proposals, their datasets, the two-view mapper, low-data splits and Pascal VOC."""

from .datasets import (
    is_proposals_dataset,
    load_proposals_json,
    register_coco,
    register_coco_as_proposals,
    register_proposals,
)
from .proposals import ProposalFilter, ProposalsError, ProposalSettings, generate_proposals
from .splits import SplitError, low_data_split, write_low_data_splits
from .two_view_mapper import TwoViewMapper
from .voc import VOCError, read_voc_split, register_voc, voc_subset

__all__ = [
    "ProposalFilter",
    "ProposalSettings",
    "ProposalsError",
    "generate_proposals",
    "is_proposals_dataset",
    "load_proposals_json",
    "register_coco",
    "register_proposals",
    "register_coco_as_proposals",
    "TwoViewMapper",
    "SplitError",
    "low_data_split",
    "write_low_data_splits",
    "VOCError",
    "read_voc_split",
    "register_voc",
    "voc_subset",
]
