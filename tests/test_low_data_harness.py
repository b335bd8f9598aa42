"""The VOC low-data harness on a tiny budget: a well-formed report from real runs, two processes
filling one grid, and resuming from the manifest on a fresh work directory."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, load_benchmark

from aligndet_d2.experiment import logged_seconds

VOC = REPO.parent / "shared" / "data" / "voc2007"


def _tiny_voc(tmp_path, n):
    """A VOC data folder whose train json holds the first ``n`` train images; VOC's own image
    folder and val.json."""
    data = tmp_path / "voc"
    (data / "annotations").mkdir(parents=True)
    train = json.loads((VOC / "annotations" / "train.json").read_text())
    train["images"] = train["images"][:n]
    ids = {im["id"] for im in train["images"]}
    train["annotations"] = [a for a in train["annotations"] if a["image_id"] in ids]
    (data / "annotations" / "train.json").write_text(json.dumps(train))
    (data / "annotations" / "val.json").symlink_to(VOC / "annotations" / "val.json")
    (data / "VOC2007").symlink_to(VOC / "VOC2007")
    return data


@pytest.mark.timeout(900)
@pytest.mark.skipif(not VOC.exists(), reason="needs ../shared/data/voc2007")
def test_tiny_low_data_run(tmp_path):
    # A pool of 16 real VOC train images; VOC's own folder and val.json, of which 4 images are
    # evaluated.
    data = _tiny_voc(tmp_path, 16)
    out = tmp_path / "report"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "low_data.py"),
        "--data",
        str(data),
        "--percents",
        "25",
        "--seeds",
        "1",
        "2",
        "--pretrain-iters",
        "2",
        "--finetune-epochs",
        "1.5",  # 4 labeled images -> 3 iterations, evaluated after 1, 2 and 3
        "--val-images",
        "4",
        "--work-dir",
        str(tmp_path / "work"),
        "--manifest",
        str(tmp_path / "runs.json"),
        "--out",
        str(out),
        "--finetune-opts",
        "faster_rcnn:model.roi_heads.box_predictor.test_score_thresh=0.0",
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    # The two arms filled by two processes at once, into one manifest.
    procs = [
        subprocess.Popen(
            cmd + ["--arms", arm, "--out", str(tmp_path / arm)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for arm in ("scratch", "aligndet")
    ]
    logs = {}
    for arm, p in zip(("scratch", "aligndet"), procs):
        stdout, stderr = p.communicate()
        assert p.returncode == 0, stdout[-2000:] + stderr[-3000:]
        logs[arm] = stdout
    assert (
        "fine-tune ft_ep1.5_val4_roi_heads.box_predictor.test_score_thresh-0.0/scratch"
        in logs["scratch"]
    )
    # The scratch-only process trained no AlignDet arm and measured no recall.
    assert (
        "faster_rcnn: pre-training" not in logs["scratch"] and "RPN recall" not in logs["scratch"]
    )
    assert "RPN recall" in logs["aligndet"] and "/scratch" not in logs["aligndet"]
    # A fresh checkout: a new work directory, the committed manifest. Nothing is trained again.
    cmd[cmd.index("--work-dir") + 1] = str(tmp_path / "work2")
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "faster_rcnn: fine-tune" not in run.stdout
    assert "faster_rcnn: pre-training" not in run.stdout and "RPN recall" not in run.stdout
    report = json.loads(out.with_name("report.json").read_text())
    assert report["pool_images"] == 16
    rows = report["rows"]
    assert sorted((r["arm"], r["seed"]) for r in rows) == [
        ("aligndet", 1),
        ("aligndet", 2),
        ("scratch", 1),
        ("scratch", 2),
    ]
    for r in rows:
        assert r["iters"] == 3 and sorted(r["points"], key=int) == ["1", "2", "3"]
        assert all(0 <= v["bbox_voc/AP50"] <= 100 for v in r["points"].values())
        # AP by class frequency in the labeled split is kept beside (20 VOC classes in 3 bins).
        assert all(
            sum(v[f"bbox_by_frequency/classes_{b}"] for b in ("rare", "common", "frequent")) == 20
            for v in r["points"].values()
        )
        assert r["seconds"] > 0
    # Seeds are folds: different labeled images.
    splits = tmp_path / "work" / "splits"
    a = json.loads((splits / "train.1@25.json").read_text())["images"]
    b = json.loads((splits / "train.2@25.json").read_text())["images"]
    assert len(a) == len(b) == 4 and a != b
    (paired,) = report["summary"]["paired"]
    assert paired["seeds"] == [1, 2] and paired["arm"] == "aligndet it2"
    deltas = [
        x["points"]["3"]["bbox_voc/AP50"] * (1 if x["arm"] == "aligndet" else -1) for x in rows
    ]
    assert paired["bbox_voc/AP50"]["mean"] == pytest.approx(sum(deltas) / 2)
    assert len(paired["reaches_scratch_final_at"]) == 2
    # 2 folds of the protocol's 3: followed, not judged.
    assert paired["target"].startswith("AP50: on track") or paired["target"].startswith(
        "AP50: short so far"
    )
    # Recall of the pool's proposals and of the RPN, random and pre-trained, against selective
    # search on the 4 evaluated images.
    rec = report["proposal_recall"]
    train = json.loads((data / "annotations" / "train.json").read_text())
    assert rec["num_gt"] == len(train["annotations"])
    assert rec["R@10/IoU0.5"] <= rec["R@32/IoU0.5"] <= rec["R@100/IoU0.5"] <= 100
    assert set(report["rpn_recall"]) == {"random", "selective_search", "soco_it2"}
    for v in report["rpn_recall"].values():
        assert v["num_gt"] > 0 and 0 <= v["AR@100"] <= v["R@100/IoU0.5"] <= 100
    md = out.with_name("report.md").read_text()
    assert (
        "| faster_rcnn | ft_ep1.5_val4_roi_heads.box_predictor.test_score_thresh-0.0 | 25 % |" in md
    )
    assert "randomly initialised RPN" in md
    assert "## AP50 by class frequency, end of schedule" in md
    assert "2/3 of the schedule: short so far" in md or "2/3 of the schedule: on track" in md
    assert out.with_name("report.png").stat().st_size > 1000
    # Every run records the machine that finished it. A later session on another machine adds a
    # fold while a row of the manifest is changed on disk after that session read it: the change
    # is kept (a process overrides only the rows it wrote), and the report counts runs by machine.
    machines = {r["machine"] for r in rows}
    assert len(machines) == 1 and "logical cores" in machines.pop()
    seeds = cmd.index("--seeds")
    cmd[seeds + 1 : seeds + 3] = ["3"]
    later = subprocess.Popen(
        cmd + ["--arms", "aligndet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    for line in later.stdout:  # the manifest is read before the first fine-tune starts
        if "fine-tune" in line:
            break
    manifest = json.loads((tmp_path / "runs.json").read_text())
    key = (
        "faster_rcnn/ft_ep1.5_val4_roi_heads.box_predictor.test_score_thresh-0.0/scratch_p25_seed1"
    )
    manifest[key]["machine"] = "a machine of an earlier session"
    (tmp_path / "runs.json").write_text(json.dumps(manifest))
    stdout, stderr = later.communicate()
    assert later.returncode == 0, stdout[-2000:] + stderr[-3000:]
    manifest = json.loads((tmp_path / "runs.json").read_text())
    assert manifest[key]["machine"] == "a machine of an earlier session"
    assert manifest[key.replace("scratch_p25_seed1", "aligndet_soco_it2_p25_seed3")]["seconds"] > 0
    assert "a machine of an earlier session (1)" in out.with_name("report.md").read_text()


@pytest.mark.skipif(not VOC.exists(), reason="needs ../shared/data/voc2007")
def test_corrupt_manifest_is_a_clear_error(tmp_path):
    manifest = tmp_path / "runs.json"
    manifest.write_text('{"faster_rcnn/ft/scratch_p10_seed1": ')  # a write cut short
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "low_data.py"),
        "--work-dir",
        str(tmp_path / "work"),
        "--manifest",
        str(manifest),
        "--report-only",
        "--out",
        str(tmp_path / "report"),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert run.returncode != 0
    assert f"{manifest}: not a json manifest" in run.stderr
    assert manifest.read_text() == '{"faster_rcnn/ft/scratch_p10_seed1": '  # nothing lost


def _logged_seconds(run_dir):
    return logged_seconds(Path(run_dir))


def test_run_time_of_a_resumed_run_leaves_out_the_time_it_was_down(tmp_path):
    # Two segments of one run, as detectron2's default_setup and train loop log them: 10 min,
    # an hour down, 5 min resumed.
    (tmp_path / "log.txt").write_text(
        "[12/04 03:30:51] detectron2 INFO: Rank of current process: 0. World size: 1\n"
        "[12/04 03:30:51] detectron2 INFO: Command line arguments: Namespace(resume=False)\n"
        "  a line of the environment table, no timestamp\n"
        "[12/04 03:40:51] d2.utils.events INFO:  iter: 499  total_loss: 9.3\n"
        "[12/04 04:40:51] detectron2 INFO: Rank of current process: 0. World size: 1\n"
        "[12/04 04:40:52] detectron2 INFO: Command line arguments: Namespace(resume=True)\n"
        "[12/04 04:45:51] d2.engine.hooks INFO: Overall training speed: 748 iterations\n"
    )
    assert _logged_seconds(str(tmp_path)) == 600 + 300


def test_run_time_of_a_resumed_run_counts_redone_work_once(tmp_path):
    # Segment 1: iterations 0-499 and the evaluation after 499 (10 min), then 20 iterations and
    # part of another evaluation that were lost (3 min), stopped. Segment 2 resumes from the
    # checkpoint of iteration 499 and runs 5 min.
    (tmp_path / "log.txt").write_text(
        "[12/04 03:30:51] detectron2 INFO: Rank of current process: 0. World size: 1\n"
        "[12/04 03:30:52] d2.engine.train_loop INFO: Starting training from iteration 0\n"
        "[12/04 03:38:51] d2.evaluation.evaluator INFO: Start inference on 1000 batches\n"
        "[12/04 03:40:51] d2.utils.events INFO:  eta: 0:10:00  iter: 499  total_loss: 9.3\n"
        "[12/04 03:41:51] d2.utils.events INFO:  eta: 0:09:00  iter: 519  total_loss: 9.1\n"
        "[12/04 03:43:51] d2.evaluation.evaluator INFO: Start inference on 1000 batches\n"
        "[12/04 04:40:51] detectron2 INFO: Rank of current process: 0. World size: 1\n"
        "[12/04 04:40:52] d2.engine.train_loop INFO: Starting training from iteration 500\n"
        "[12/04 04:41:51] d2.utils.events INFO:  eta: 0:04:00  iter: 519  total_loss: 9.2\n"
        "[12/04 04:45:51] d2.engine.hooks INFO: Overall training speed: 20 iterations\n"
    )
    assert _logged_seconds(str(tmp_path)) == 600 + 300
    # Stopped before its first checkpoint: the next start redoes everything.
    text = (tmp_path / "log.txt").read_text().replace("from iteration 500", "from iteration 0")
    (tmp_path / "log.txt").write_text(text)
    assert _logged_seconds(str(tmp_path)) == 300


def _row(arm, iters, run="", export="default"):
    pts = {"3": {"bbox_voc/AP50": 10.0 + (iters or 0) / 1000, "bbox/AP": 1.0}}
    pts["3"]["bbox_agnostic/AP"] = 2.0
    return dict(
        detector="faster_rcnn", finetune="ft", percent=10.0, seed=1, arm=arm, iters=3,
        pretrain_iters=iters, pretrain_epochs=iters and iters / 1250, export=export,
        points=pts, seconds=1.0, run=run,
    )  # fmt: skip


def _paired_arms(rows):
    code = (
        "import json, sys, low_data; s = low_data.summarize(json.loads(sys.stdin.read())); "
        "print(json.dumps([(d['arm'], len(d['seeds'])) for d in s['paired']]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(rows),
        capture_output=True,
        text=True,
        cwd=REPO / "benchmarks",
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return [tuple(a) for a in json.loads(run.stdout.splitlines()[-1])]


def test_report_orders_pretraining_lengths_by_value():
    rows = [_row("aligndet", 2500), _row("aligndet", 312), _row("scratch", None)]
    rows.append(_row("aligndet", 1250))
    arms = [a for a, _ in _paired_arms(rows)]
    assert arms == ["aligndet it312", "aligndet it1250", "aligndet it2500"]


def test_report_keeps_pretraining_variants_apart():
    """Fine-tunes from a pre-training run with --pretrain-opts are their own arm, not more folds
    of the default one."""
    ft = "fcos/ft/aligndet_soco_it1250"
    rows = [
        _row("scratch", None, "fcos/ft/scratch_p10_seed1"),
        _row("aligndet", 1250, f"{ft}_p10_seed1"),
        _row("aligndet", 1250, f"{ft}_negative_overlap_iou-0.5_p10_seed1"),
        _row("aligndet", 1250, f"{ft}_negative_overlap_iou-0.5_keep_reg_p10_seed1", "keep_reg"),
    ]
    assert _paired_arms(rows) == [
        ("aligndet it1250", 1),
        ("aligndet it1250 (negative_overlap_iou-0.5)", 1),
        ("aligndet it1250 (negative_overlap_iou-0.5, keep_reg)", 1),
    ]


@pytest.mark.skipif(not VOC.exists(), reason="needs ../shared/data/voc2007")
def test_variants_pick_sibling_configs_and_name_their_runs(tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "low_data.py"),
        "--work-dir",
        str(tmp_path / "work"),
        "--manifest",
        str(tmp_path / "runs.json"),
        "--report-only",
        "--skip-recall",
        "--out",
        str(tmp_path / "report"),
        "--pretrain-variant",
        "wide",
        "--finetune-variant",
        "frozen_wide",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    # Faster R-CNN has both wide configs; the dense detectors have none.
    assert run.returncode == 0, run.stderr[-3000:]
    run = subprocess.run(cmd + ["--detectors", "fcos"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode != 0
    assert "fcos has no pretrain config for setting 'cpu' with variant 'wide'" in run.stderr

    low_data = load_benchmark("low_data")
    args = SimpleNamespace(
        pretrain_variant="wide", finetune_variant="frozen_wide", pretrain_opts=[], finetune_opts=[]
    )
    h = SimpleNamespace(args=args)
    assert low_data.Harness.pretrain_tag(h, "faster_rcnn", 1250) == "soco_it1250_wide"
    assert low_data.Harness.finetune_config(h, "faster_rcnn") == (
        "configs/finetune_faster_rcnn_frozen_wide_voc_cpu.py"
    )
    row = {"pretrain_iters": 1250, "run": "x/ft/aligndet_soco_it1250_wide_keep_reg_p10_seed1"}
    assert low_data._pretrain_variant(row) == "wide"


@pytest.mark.timeout(900)
@pytest.mark.skipif(not VOC.exists(), reason="needs ../shared/data/voc2007")
def test_detr_runs_through_the_harness_on_clustered_proposals(tmp_path):
    """DETR's pre-training reads the pool's proposals clustered into --detr-clusters classes."""
    data = _tiny_voc(tmp_path, 12)
    work = tmp_path / "work"
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "low_data.py"),
        "--data",
        str(data),
        "--detectors",
        "detr",
        "--detr-clusters",
        "8",
        "--percents",
        "25",
        "--seeds",
        "1",
        "--pretrain-iters",
        "2",
        "--finetune-epochs",
        "1.5",
        "--val-images",
        "2",
        "--work-dir",
        str(work),
        "--manifest",
        str(tmp_path / "runs.json"),
        "--out",
        str(tmp_path / "report"),
        "--arms",
        "aligndet",
        "--skip-recall",
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    clustered = json.loads((work / "proposals" / "pool_soco_k8.json").read_text())
    assert [c["name"] for c in clustered["categories"]] == [f"cluster_{i}" for i in range(1, 9)]
    assert (work / "detr" / "pretrain" / "soco_it2_k8" / "model_final.pth").exists()
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert any(k.startswith("detr/ft") and "aligndet_soco_it2_k8" in k for k in runs)


def _backbone_modes(rows):
    """The report's backbone-modes summary of ``rows``, computed by the harness itself."""
    code = (
        "import json, sys, low_data; s = low_data.summarize(json.loads(sys.stdin.read())); "
        "print(json.dumps(s['backbone_modes']))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(rows), capture_output=True, text=True,
        cwd=REPO / "benchmarks", env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


def test_backbone_modes_compare_against_the_best_scratch_arm_of_any_mode():
    # Final VOC AP50 per fold (1, 2) for each fine-tune mode and arm.
    ap = {
        ("ft", "scratch"): (12.0, 11.0),
        ("ft_frozen", "scratch"): (11.5, 11.6),
        ("ft_frozen_backbone.bottom_up.adapters-parallel", "scratch"): (11.8, 11.2),
        ("ft", "aligndet"): (14.0, 13.0),
        ("ft_frozen", "aligndet"): (12.5, 11.4),
        ("ft_frozen_backbone.bottom_up.adapters-parallel", "aligndet"): (13.0, 12.0),
    }
    rows = []
    for (ft, arm), vals in ap.items():
        for seed, v in zip((1, 2), vals):
            r = _row(arm, 1250 if arm == "aligndet" else None)
            r.update(finetune=ft, seed=seed)
            r["points"]["3"]["bbox_voc/AP50"] = v
            rows.append(r)
    (d,) = _backbone_modes(rows)
    assert d["best_scratch"] == [12.0, 11.6]  # trained in fold 1, frozen in fold 2
    adapters = "ft_frozen_backbone.bottom_up.adapters-parallel"
    assert d["modes"][adapters] == "frozen + adapters parallel"
    frozen = d["vs_best_scratch"]["ft_frozen"]
    assert frozen["folds_above"] == 1 and frozen["min"] == pytest.approx(-0.2)
    assert d["vs_best_scratch"]["ft"]["folds_above"] == 2
    assert d["adapters_vs_frozen"][f"{adapters}/aligndet"]["folds_above"] == 2
    scratch = d["adapters_vs_frozen"][f"{adapters}/scratch"]
    assert scratch["folds_above"] == 1 and scratch["mean"] == pytest.approx(-0.05)


def test_backbone_modes_pair_a_wide_mode_with_its_wide_pretraining_and_list_partial_modes():
    # Folds 1-2 in the trained and frozen modes and the wide one (whose AlignDet arm is the wide
    # pre-training's export); fold 1 only in series adapters, still being run.
    ap = {
        ("ft", "scratch", ""): (12.0, 11.0),
        ("ft", "aligndet", ""): (14.0, 13.0),
        ("ft_frozen", "scratch", ""): (11.5, 11.6),
        ("ft_frozen", "aligndet", ""): (12.5, 11.4),
        ("ft_frozen_wide", "scratch", ""): (12.5, 10.0),
        ("ft_frozen_wide", "aligndet", "_wide"): (13.5, 12.0),
        ("ft_frozen_backbone.bottom_up.adapters-series", "scratch", ""): (20.0,),
        ("ft_frozen_backbone.bottom_up.adapters-series", "aligndet", ""): (21.0,),
    }
    rows = []
    for (ft, arm, variant), vals in ap.items():
        for seed, v in zip((1, 2), vals):
            run = f"faster_rcnn/{ft}/aligndet_soco_it1250{variant}_p10_seed{seed}"
            r = _row(arm, 1250 if arm == "aligndet" else None, run=run if arm != "scratch" else "")
            r.update(finetune=ft, seed=seed)
            r["points"]["3"]["bbox_voc/AP50"] = v
            rows.append(r)
    (d,) = _backbone_modes(rows)
    assert d["arm"] == "aligndet it1250" and d["seeds"] == [1, 2]
    assert list(d["modes"]) == ["ft", "ft_frozen", "ft_frozen_wide"]
    assert d["arms"]["ft_frozen_wide"] == "aligndet it1250 (wide)"
    assert d["aligndet"]["ft_frozen_wide"] == [13.5, 12.0]
    assert d["best_scratch"] == [12.5, 11.6]  # wide in fold 1, frozen in fold 2
    assert d["vs_best_scratch"]["ft_frozen_wide"]["folds_above"] == 2
    assert d["partial"] == {"frozen + adapters series": [1]}
    # The series row's 20.0 of fold 1 is not yet the best scratch arm: it has one fold of two.
    assert 20.0 not in d["best_scratch"]


@pytest.mark.skipif(not VOC.exists(), reason="needs ../shared/data/voc2007")
def test_both_arms_of_a_fold_train_on_its_split_and_record_where_they_come_from(
    tmp_path, monkeypatch
):
    """Per fold, the scratch and the AlignDet fine-tune read the same labeled split; every row
    records the split's hash, the code's commit and (AlignDet) the pre-training checkpoint it
    started from; a pre-training done again is recorded as another run, and the report says which
    folds come from which; pairs are by fold, and a pair of different splits is an error."""
    import hashlib

    low_data = load_benchmark("low_data")
    calls = []

    def fake_train_net(args, run):
        calls.append((run, dict(a.split("=", 1) for a in args if "=" in a)))
        run.mkdir(parents=True, exist_ok=True)
        if run.parent.name == "pretrain":
            (run / "model_final.pth").write_bytes(b"pre-training 1")
        else:  # the final evaluation, what the harness reads
            it, seed = int(calls[-1][1]["train.max_iter"]), int(calls[-1][1]["train.seed"])
            ap = {
                f"{t}/{m}": 10.0 * seed + ("aligndet" in run.name) for t, m, _ in low_data.METRICS
            }
            (run / "metrics.json").write_text(json.dumps({"iteration": it, **ap}) + "\n")

    import aligndet_d2.experiment.stages as stages

    monkeypatch.setattr(stages, "train_net_resumable", fake_train_net)
    args = SimpleNamespace(
        data=str(_tiny_voc(tmp_path, 16)), detectors=["faster_rcnn"], percents=[25.0],
        seeds=[2, 1], pretrain_iters=[2], finetune_epochs=1.5, val_images=4, pretrain_opts=[],
        finetune_opts=[], detr_clusters=256, pretrain_variant="", finetune_variant="",
        keep_reg=False, drop_rpn=False, checkpoint_period=250, skip_recall=True,
        report_only=False, holdout=0, workers=1, arms=["scratch", "aligndet"],
        work_dir=str(tmp_path / "work"), manifest=str(tmp_path / "runs.json"),
    )  # fmt: skip
    h = low_data.Harness(args)
    monkeypatch.setattr(h, "proposals", lambda *a, **k: "pool.json")
    monkeypatch.setattr(h, "export", lambda run: run / "exported.pth")
    h.run()
    splits = {}
    for run, opts in calls:
        if run.parent.name != "pretrain":
            splits.setdefault(int(opts["train.seed"]), set()).add(
                opts["dataloader.train.dataset.names.json_file"]
            )
    assert {s: len(files) for s, files in splits.items()} == {1: 1, 2: 1}  # one split per fold
    assert splits[1] != splits[2]
    rows = {k: v for k, v in json.loads((tmp_path / "runs.json").read_text()).items() if "arm" in v}
    assert len(rows) == 4
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    for r in rows.values():
        (file,) = splits[r["seed"]]
        assert r["split"]["sha256"] == hashlib.sha256(open(file, "rb").read()).hexdigest()
        assert r["code"]["commit"] == commit
        first = hashlib.sha256(b"pre-training 1").hexdigest()
        assert r.get("pretrain") == (
            {"run": "faster_rcnn/pretrain/soco_it2", "sha256": first}
            if r["arm"] == "aligndet"
            else None
        )
    # A later session without the work directory pre-trains again (other weights) for fold 3.
    pre = tmp_path / "work" / "faster_rcnn" / "pretrain" / "soco_it2"
    (pre / "model_final.pth").write_bytes(b"pre-training 2")
    args.seeds = [1, 2, 3]
    h = low_data.Harness(args)
    monkeypatch.setattr(h, "proposals", lambda *a, **k: "pool.json")
    monkeypatch.setattr(h, "export", lambda run: run / "exported.pth")
    n_calls = len(calls)
    h.run()
    assert [int(o["train.seed"]) for _, o in calls[n_calls:]] == [3, 3]  # folds 1, 2 are done
    second = hashlib.sha256(b"pre-training 2").hexdigest()
    manifest = json.loads((tmp_path / "runs.json").read_text())
    assert manifest["faster_rcnn/pretrain/soco_it2"]["sha256"] == first
    assert manifest[f"faster_rcnn/pretrain/soco_it2#{second[:12]}"]["sha256"] == second
    rows = [{**v, "run": k} for k, v in manifest.items() if "arm" in v]
    rows.sort(key=lambda r: (r["arm"] == "scratch", -r["seed"]))  # pairs are found by fold
    (paired,) = low_data.summarize(rows)["paired"]
    assert paired["seeds"] == [1, 2, 3] and paired["bbox_voc/AP50"]["mean"] == 1.0
    assert paired["pretrain_runs"] == [first[:12], first[:12], second[:12]]
    assert paired["mixed_pretraining"] == (
        f"2 pre-training runs: folds 1, 2 from {first[:12]}; fold 3 from {second[:12]}"
    )
    bad = next(r for r in rows if r["arm"] == "scratch" and r["seed"] == 2)
    bad["split"] = {**bad["split"], "sha256": "0" * 64}
    with pytest.raises(SystemExit, match="fold 2 of both arms, but trained on different labeled"):
        low_data.summarize(rows)
