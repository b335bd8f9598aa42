"""AlignDet DETR pre-training: cluster classes through the loader, one query per proposal for the
contrastive loss, the momentum copy of the queries, export into the DETR fine-tune config."""

import json

import pytest
import torch
from conftest import COCO64, CONFIGS, Args, write_subset_json
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from aligndet_d2.checkpoint.export import check_report, export_state_dict, key_report
from aligndet_d2.data import TwoViewMapper, load_proposals_json
from aligndet_d2.data.clusters import ClusterSettings, cluster_proposals
from aligndet_d2.data.proposals import ProposalsError
from aligndet_d2.modeling.detr import HungarianMatcher


def _pair(**overrides):
    cfg = LazyConfig.load(str(CONFIGS / "pretrain_box_detr_cpu.py"))
    cfg.model.detector.backbone.pretrained = False
    for k, v in overrides.items():
        cfg.model.detector[k] = v
    torch.manual_seed(0)
    return instantiate(cfg.model)


def _views():
    g = torch.Generator().manual_seed(0)
    images = []
    for h, w, n in ((160, 224, 3), (192, 160, 2)):
        views = []
        for v in range(2):
            inst = Instances((h, w))
            boxes = torch.tensor([[10.0, 20.0, 90.0, 120.0], [50, 40, 150, 150], [5, 5, 60, 50]])
            inst.gt_boxes = Boxes(boxes[:n] + 3 * v)
            inst.gt_ids = torch.arange(n)
            inst.gt_classes = torch.tensor([3, 7, 1][:n])
            views.append(
                {"image": torch.randint(0, 256, (3, h, w), generator=g), "instances": inst}
            )
        images.append({"file_name": f"im{h}.jpg", "views": views})
    return images


def test_pretraining_step_gives_set_and_contrastive_losses():
    pair = _pair()
    batch = _views()
    with EventStorage():
        _, samples = pair.online.forward_pretrain([d["views"][0] for d in batch], True)
        losses = pair(batch)
    # One query per proposal and decoder layer (2): 3 + 2 ids (offset per image by MomentumPair),
    # the rest background; the fixed set is the last layer's matched queries.
    assert sorted(samples.ids[samples.ids >= 0].tolist()) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert samples.emb.shape == (2 * 2 * 30, 256) and samples.fixed.sum() == 5
    assert not samples.fixed[: 2 * 30].any()
    names = {"loss_ce", "loss_bbox", "loss_giou"}
    assert set(losses) == names | {f"{k}_0" for k in names} | {"loss_con"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert pair.online.projector[0].weight.grad is not None
    assert all(p.grad is None for p in pair.online.backbone.parameters())
    assert all(p.grad is None for p in pair.momentum.parameters())


def test_query_embedding_is_copied_into_the_momentum_detector():
    pair = _pair()
    pair.copy_online_to_momentum()
    with torch.no_grad():
        for p in pair.online.parameters():
            if p.requires_grad:
                p.add_(1.0)
    pair.update_momentum(0.9)
    assert torch.equal(pair.momentum.query_embed.weight, pair.online.query_embed.weight)
    k, q = pair.momentum.class_embed.weight, pair.online.class_embed.weight
    assert torch.allclose(q - k, torch.full_like(k, 0.9))  # averaged: 0.9 of the step behind


def test_instance_match_with_class_costs_is_refused():
    with pytest.raises(ValueError, match="box costs only"):
        _pair(instance_matcher=HungarianMatcher(cost_class=1.0))


def test_export_loads_into_the_detr_fine_tune_config():
    pair = _pair()
    ft_cfg = LazyConfig.load(str(CONFIGS / "finetune_detr_voc_cpu.py"))
    ft_cfg.model.backbone.pretrained = False
    ft = instantiate(ft_cfg.model)
    for keep in (False, True):
        exported, dropped = export_state_dict(pair.state_dict(), keep_box_regression=keep)
        report = key_report(exported, ft.state_dict(), dropped)
        check_report(report)
        assert report["transformer"]["transferred"] and not report["transformer"]["random_init"]
        assert report["backbone"]["transferred"] and not report["backbone"]["random_init"]
        heads = report["DETR heads"]
        # The clusters' classifier is always dropped (K + 1 outputs, not the dataset's classes);
        # the box MLP's last layer only without keep_box_regression.
        assert {k.split(".")[0] for k in heads["random_init"]} >= {"class_embed"}
        assert any(k.startswith("bbox_embed.4.") for k in heads["random_init"]) is not keep
        assert not any("projector" in k for k in exported)


def test_cluster_json_feeds_the_classes_to_both_views(tmp_path):
    src = tmp_path / "proposals.json"
    write_subset_json(str(COCO64 / "annotations" / "train.json"), src, 4)
    out = tmp_path / "k3.json"
    settings = ClusterSettings(
        num_clusters=3, pca_dim=4, max_proposals=5, short_edge=128, max_size=192
    )
    cluster_proposals(
        str(src),
        str(COCO64 / "images"),
        str(CONFIGS / "pretrain_box_detr_cpu.py"),
        str(out),
        settings,
    )
    dicts = load_proposals_json(str(out), str(COCO64 / "images"))
    data = json.loads(out.read_text())
    first = [a for a in data["annotations"] if a["image_id"] == dicts[0]["image_id"]]
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [
        a["category_id"] - 1 for a in first
    ]
    mapper = TwoViewMapper(short_edge_lengths=(128,), max_size=192, image_format="RGB")
    views = mapper(dicts[0])["views"]
    expected = torch.tensor([a["category_id"] for a in dicts[0]["annotations"]])
    for v in views:
        assert torch.equal(v["instances"].gt_classes, expected[v["instances"].gt_ids])
    # A cluster id outside the categories is an error naming the json and the box.
    data["annotations"][0]["category_id"] = 9
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ProposalsError, match="category_id 9 is not one of the 3 clusters"):
        load_proposals_json(str(bad), str(COCO64 / "images"))


@pytest.mark.timeout(600)
def test_detr_pretraining_runs_and_exports(tmp_path):
    from conftest import pretrain_cfg

    from aligndet_d2.engine.train_loop import build_trainer

    src = tmp_path / "proposals.json"
    write_subset_json(str(COCO64 / "annotations" / "train.json"), src, 8)
    clustered = tmp_path / "k4.json"
    cluster_proposals(
        str(src),
        str(COCO64 / "images"),
        str(CONFIGS / "pretrain_box_detr_cpu.py"),
        str(clustered),
        ClusterSettings(num_clusters=4, pca_dim=8, max_proposals=20, short_edge=160, max_size=224),
    )
    cfg = pretrain_cfg(
        "detr",
        extra=[
            f"dataloader.train.dataset.json_file={clustered}",
            "model.detector.num_classes=4",
            f"train.output_dir={tmp_path}",
            "train.max_iter=4",
            "train.device=cpu",
        ],
    )
    trainer, _, start = build_trainer(Args(), cfg)
    trainer.train(start, 4)
    ckpt = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    exported, dropped = export_state_dict(ckpt["model"])
    ft = LazyConfig.load(str(CONFIGS / "finetune_detr_cpu.py"))
    check_report(key_report(exported, instantiate(ft.model).state_dict(), dropped))


def _matched_layers(detr, perms, n_targets):
    """decode() replaced: layer l's query perms[l][t] predicts exactly target t's box, every
    other query a box far from all of them."""
    from torchvision.ops import box_convert

    def decode(images, mask):
        b, q, n_layers = len(images.image_sizes), detr.num_queries, len(perms)
        boxes = torch.full((n_layers, b, q, 4), 0.02)
        boxes[..., :2] = 0.97  # a small box in the bottom right corner
        for i, (h, w) in enumerate(images.image_sizes):
            tb = box_convert(torch.tensor(_VIEW_BOXES[: n_targets[i]]), "xyxy", "cxcywh")
            tb = tb / torch.tensor([w, h, w, h])
            for layer, perm in enumerate(perms):
                boxes[layer, i, perm[: n_targets[i]]] = tb
        g = torch.Generator().manual_seed(0)
        hs = torch.randn(n_layers, b, q, detr.transformer.d_model, generator=g)
        return hs, detr.class_embed(hs), boxes

    return decode


_VIEW_BOXES = [[10.0, 20.0, 90.0, 120.0], [50, 40, 150, 150], [5, 5, 60, 50]]


def test_every_decoder_layer_gives_each_proposal_the_query_matched_on_its_own_boxes():
    from aligndet_d2.modeling.contrastive import BACKGROUND_ID

    detr = _pair().online
    perms = [torch.tensor([4, 11, 7]), torch.tensor([20, 2, 9])]  # two layers, other queries
    views = [d["views"][0] for d in _views()]
    views[1]["instances"].gt_ids = torch.tensor([3, 4])  # batch-unique, as MomentumPair makes them
    detr.decode = _matched_layers(detr, perms, [3, 2])
    with EventStorage():
        _, samples = detr.forward_pretrain(views, with_losses=False)
    q = detr.num_queries
    expected = torch.full((2, 2, q), BACKGROUND_ID)
    for layer, perm in enumerate(perms):
        expected[layer, 0, perm[:3]] = torch.tensor([0, 1, 2])
        expected[layer, 1, perm[:2]] = torch.tensor([3, 4])
    assert torch.equal(samples.ids.view(2, 2, q), expected)
    # Embeddings in the same (layer, image, query) order as the ids.
    hs, _, _ = detr.decode(detr.preprocess(views)[0], None)
    assert torch.allclose(samples.emb.view(2, 2, q, -1), detr.projector(hs), atol=1e-6)
    assert torch.equal(samples.fixed.view(2, 2, q)[1], expected[1] >= 0)
    assert not samples.fixed.view(2, 2, q)[0].any()
    # The option of contrasting the last layer only.
    detr.contrast_layers = "last"
    with EventStorage():
        _, last = detr.forward_pretrain(views, with_losses=False)
    assert torch.equal(last.ids, expected[1].flatten()) and torch.equal(last.fixed, last.ids >= 0)
    with pytest.raises(ValueError, match="contrast_layers='first'"):
        _pair(contrast_layers="first")


def _proposals_json(tmp_path, categories, per_image=3, images=2):
    name = f"proposals_{len(categories)}_{categories[0]['name']}_{per_image}.json"
    data = {
        "images": [
            {"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100} for i in range(images)
        ],
        "annotations": [
            {"id": 10 * i + j, "image_id": i, "bbox": [j, j, 20, 20], "category_id": 1}
            for i in range(images)
            for j in range(per_image)
        ],
        "categories": categories,
    }
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _clusters(k):
    return [{"id": i + 1, "name": f"cluster_{i + 1}"} for i in range(k)]


def test_detr_pretraining_refuses_proposals_it_cannot_learn_from_before_training(tmp_path):
    from aligndet_d2.data.datasets import check_cluster_labels
    from aligndet_d2.engine.train_loop import check_datasets

    args = dict(num_classes=4, num_queries=3, max_proposals=None)
    check_cluster_labels(_proposals_json(tmp_path, _clusters(4)), **args)  # fits
    plain = _proposals_json(tmp_path, [{"id": 1, "name": "selective_search"}])
    with pytest.raises(
        ProposalsError, match="selective_search_3.json: its categories .'selective_search'"
    ):
        check_cluster_labels(plain, **args)
    for k, what in ((5, "ids from 4 up would train as 'no object'"), (3, "1 classes would have")):
        with pytest.raises(ProposalsError, match=f"{k} clusters but model.detector.num_classes=4"):
            check_cluster_labels(_proposals_json(tmp_path, _clusters(k)), **args)
        with pytest.raises(ProposalsError, match=what):
            check_cluster_labels(_proposals_json(tmp_path, _clusters(k)), **args)
    many = _proposals_json(tmp_path, _clusters(4), per_image=5)
    with pytest.raises(ProposalsError, match="gives 5 proposals .* but the detector has 3 queries"):
        check_cluster_labels(many, **args)
    check_cluster_labels(many, **{**args, "max_proposals": 3})  # the loader reads 3 of them
    # train_net.py checks the config's json before it builds anything.
    cfg = LazyConfig.load(str(CONFIGS / "pretrain_box_detr_cpu.py"))
    cfg.dataloader.train.dataset.json_file = plain
    with pytest.raises(ProposalsError, match="not cluster pseudo-labels"):
        check_datasets(cfg)
