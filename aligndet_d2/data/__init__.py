"""Proposals, their datasets and the two-view mapper."""

from .datasets import (
    is_proposals_dataset,
    load_proposals_json,
    register_coco,
    register_coco_as_proposals,
    register_proposals,
)
from .proposals import ProposalFilter, ProposalsError, ProposalSettings, generate_proposals
from .two_view_mapper import TwoViewMapper

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
]
