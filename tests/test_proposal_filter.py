import numpy as np
import pytest

from aligndet_d2.cli.proposals import main as proposals_main
from aligndet_d2.data.proposals import ProposalFilter, ProposalsError, ProposalSettings


def test_full_filter_on_hand_made_boxes():
    f = ProposalFilter()
    # 100 x 100 image: sqrt(w * h) may be at most 80.
    boxes = np.array(
        [
            [0, 0, 32, 32],  # smallest allowed side
            [0, 0, 31, 40],  # too narrow
            [0, 0, 96, 32],  # aspect exactly 3
            [0, 0, 97, 32],  # aspect above 3
            [0, 0, 32, 96],  # aspect exactly 1/3
            [0, 0, 80, 80],  # scale exactly 0.8
            [0, 0, 81, 81],  # scale above 0.8
        ]
    )
    assert f.passes(boxes, 100, 100).tolist() == [True, False, True, False, True, True, False]
    kept, fallback = f.apply(boxes, 100, 100)
    assert fallback is None
    assert kept.tolist() == [[0, 0, 32, 32], [0, 0, 96, 32], [0, 0, 32, 96], [0, 0, 80, 80]]


def test_soco_fallbacks():
    f = ProposalFilter()
    # Nothing passes the full filter; aspect ratio alone keeps the first two.
    kept, fallback = f.apply(np.array([[0, 0, 90, 90], [0, 0, 20, 20], [0, 0, 10, 50]]), 100, 100)
    assert fallback == "aspect_ratio"
    assert kept.tolist() == [[0, 0, 90, 90], [0, 0, 20, 20]]
    # Nothing passes the aspect ratio either; min side alone keeps the first.
    kept, fallback = f.apply(np.array([[0, 0, 200, 40], [0, 0, 10, 50]]), 300, 300)
    assert fallback == "min_size"
    assert kept.tolist() == [[0, 0, 200, 40]]
    # Nothing passes anything.
    kept, fallback = f.apply(np.array([[0, 0, 10, 100]]), 100, 100)
    assert fallback == "none" and kept.shape == (0, 4)


def test_dedup_and_top_k_keep_selective_search_order():
    boxes = np.array([[0, 0, 50, 50], [1, 1, 50, 50], [60, 0, 40, 40], [0, 60, 40, 40]])
    kept, _ = ProposalFilter(dedup_iou=0.5).apply(boxes, 200, 200)
    assert kept.tolist() == [[0, 0, 50, 50], [60, 0, 40, 40], [0, 60, 40, 40]]
    kept, _ = ProposalFilter(dedup_iou=0.5, top_k=2).apply(boxes, 200, 200)
    assert kept.tolist() == [[0, 0, 50, 50], [60, 0, 40, 40]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_aspect": 3, "max_aspect": 1}, "0 < min_aspect <= max_aspect"),
        ({"max_scale": 1.5}, "0 < max_scale <= 1"),
        ({"min_size": -1}, "min_size=-1 (allowed: a number >= 0)"),
        ({"top_k": 0}, "top_k=0 (allowed: an integer >= 1"),
        ({"dedup_iou": 1.0}, "0 < dedup_iou < 1"),
    ],
)
def test_impossible_filter_values_list_allowed_values(kwargs, message):
    with pytest.raises(ProposalsError, match="impossible proposal filter") as e:
        ProposalFilter(**kwargs)
    assert message in str(e.value)


def test_unknown_mode_lists_modes(capsys):
    with pytest.raises(
        ProposalsError,
        match=r"unknown selective search mode 'slow' \(allowed: "
        r"\('soco', 'fast', 'quality'\)\)",
    ):
        ProposalSettings(mode="slow")
    with pytest.raises(SystemExit):
        proposals_main(["generate", "--image-root", ".", "--output", "x.json", "--mode", "slow"])
    assert "invalid choice: 'slow' (choose from" in capsys.readouterr().err


def test_cli_reports_impossible_filter(tmp_path, capsys):
    rc = proposals_main(
        [
            "generate",
            "--image-root",
            str(tmp_path),
            "--output",
            str(tmp_path / "p.json"),
            "--max-scale",
            "2",
        ]
    )
    assert rc == 1
    assert "max_scale=2.0 (allowed: 0 < max_scale <= 1)" in capsys.readouterr().err
