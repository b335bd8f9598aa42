"""Two-process pre-training on the CPU (gloo), launched as train_net.py launches: the ranks keep
identical online and momentum weights after every step, rank 0 alone writes checkpoints, and the
run resumes from them."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import Args, small_pretrain_cfg
from detectron2.engine import HookBase, launch

from aligndet_d2.engine.hooks import unwrap_model


class _SameWeightsOnEveryRank(HookBase):
    """Records, after each step, the largest difference of this rank's online and momentum
    weights (parameters and buffers) to rank 0's."""

    def __init__(self, out):
        self.out = out

    def before_train(self):
        self.out[("start", dist.get_rank())] = self.trainer.start_iter

    def after_step(self):
        pair = unwrap_model(self.trainer.model)
        for name in ("online", "momentum"):
            state = getattr(pair, name).state_dict()
            v = torch.cat([t.detach().double().flatten() for t in state.values()])
            v0 = v.clone()
            dist.broadcast(v0, src=0)
            self.out[(name, dist.get_rank(), self.trainer.iter)] = (v - v0).abs().max().item()


def _worker(output_dir, max_iter, resume, out):
    from aligndet_d2.engine.train_loop import build_trainer

    cfg = small_pretrain_cfg(
        output_dir,
        max_iter=max_iter,
        extra=["model.gather_negatives=True", "train.checkpointer.period=2"],
    )
    trainer, _, start_iter = build_trainer(Args(resume=resume), cfg)
    trainer.register_hooks([_SameWeightsOnEveryRank(out)])
    trainer.train(start_iter, max_iter)


@pytest.mark.timeout(600)
def test_two_process_pretraining_keeps_ranks_identical_and_resumes(tmp_path):
    out = mp.Manager().dict()
    launch(_worker, 2, dist_url="auto", args=(str(tmp_path), 3, False, out))
    assert out[("start", 0)] == out[("start", 1)] == 0
    for it in range(3):
        for name in ("online", "momentum"):
            assert out[(name, 1, it)] == 0.0, (name, it)
    # Rank 0 alone writes: the periodic checkpoint after iteration 1 and the final one.
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == [
        "model_0000001.pth",
        "model_final.pth",
    ]
    first = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert first["iteration"] == 2

    launch(_worker, 2, dist_url="auto", args=(str(tmp_path), 5, True, out))
    assert out[("start", 0)] == out[("start", 1)] == 3  # after the last saved iteration
    for it in (3, 4):
        for name in ("online", "momentum"):
            assert out[(name, 1, it)] == 0.0, (name, it)
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 4
    moved = [
        k
        for k, v in final["model"].items()
        if k.startswith("online.")
        and v.is_floating_point()
        and not torch.equal(v, first["model"][k])
    ]
    assert moved  # the resumed steps trained
