"""Resume after step 3 restores both branches, optimizer, scheduler and iteration exactly; a
resumed run writes the evaluation its interrupted run did not."""

import json

import torch
from conftest import Args, small_finetune_cfg, small_pretrain_cfg

from aligndet_d2.checkpoint.export import load_checkpoint_file
from aligndet_d2.engine.hooks import ResumingEvalHook
from aligndet_d2.engine.train_loop import build_trainer, do_train


def _equal(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_resume_after_step_3(tmp_path):
    # 6 iterations, a checkpoint after the 3rd (iteration index 2).
    cfg = small_pretrain_cfg(tmp_path, max_iter=6, extra=["train.checkpointer.period=3"])
    do_train(Args(), cfg)
    saved = load_checkpoint_file(str(tmp_path / "model_0000002.pth"))
    assert saved["iteration"] == 2
    assert any(k.startswith("momentum.") for k in saved["model"])
    (tmp_path / "last_checkpoint").write_text("model_0000002.pth")

    cfg = small_pretrain_cfg(tmp_path, max_iter=6, extra=["train.checkpointer.period=3"])
    trainer, _, start = build_trainer(Args(resume=True), cfg)
    assert start == 3 and trainer.iter == 2
    _equal(trainer.model.state_dict(), saved["model"], "model")
    _equal(trainer.optimizer.state_dict(), saved["trainer"]["optimizer"], "optimizer")
    assert saved["trainer"]["optimizer"]["state"]  # SGD momentum buffers were saved
    sched = next(h for h in trainer._hooks if type(h).__name__ == "LRScheduler")
    trainer.max_iter, trainer.iter = 6, start  # as trainer.train(start, 6) sets them
    sched.before_train()  # Detectron2 rebuilds a ParamScheduler's state from the iteration here
    _equal(sched.state_dict(), saved["trainer"]["hooks"]["LRScheduler"])
    assert sched.scheduler.last_epoch == 3  # stepped after each of the 3 iterations
    # The momentum copy is not reset to the online one on resume.
    assert not all(
        torch.equal(a, b)
        for a, b in zip(
            trainer.model.online.state_dict().values(), trainer.model.momentum.state_dict().values()
        )
    )
    trainer.train(start, 6)
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(v)) for v, _ in losses)


def _eval_iterations(metrics_json):
    recs = [json.loads(line) for line in metrics_json.read_text().splitlines()]
    return [r["iteration"] for r in recs if "bbox/AP" in r]


def test_resume_runs_the_evaluation_an_interrupted_run_did_not_write(tmp_path):
    # Checkpoint and evaluation every 2 of 4 iterations; a stand-in evaluator (the real one is
    # tested in test_voc.py) that writes eval_results.json as do_test does.
    cfg = small_finetune_cfg(
        tmp_path, max_iter=4, extra=["train.eval_period=2", "train.checkpointer.period=2"]
    )
    calls = []

    def train(resume):
        trainer, _, start = build_trainer(Args(resume=resume), cfg)
        hook = next(h for h in trainer._hooks if isinstance(h, ResumingEvalHook))

        def evaluate():
            calls.append(trainer.storage.iter)
            res = {"bbox": {"AP": float(len(calls))}}
            (tmp_path / "eval_results.json").write_text(json.dumps(res))
            return res

        hook._func = evaluate
        trainer.train(start, 4)

    metrics = tmp_path / "metrics.json"
    train(resume=False)
    # Detectron2 logs the final evaluation under max_iter.
    assert calls == [1, 4] and _eval_iterations(metrics) == [1, 4]

    # Stopped during the evaluation after iteration 1: its checkpoint exists, its metrics do not.
    kept = [line for line in metrics.read_text().splitlines() if json.loads(line)["iteration"] < 1]
    metrics.write_text("".join(f"{line}\n" for line in kept))
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    calls.clear()
    train(resume=True)
    assert calls == [1, 4]  # the missing evaluation first, logged under its iteration
    assert _eval_iterations(metrics) == [1, 4]

    # Resumed again from the same checkpoint: that evaluation is there now, and is not redone.
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    calls.clear()
    train(resume=True)
    assert calls == [4]
