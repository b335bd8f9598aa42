"""The operator counter behind benchmarks/step_ops.py counts a tiny known computation exactly,
by phase, host syncs included."""

import torch

from aligndet_d2.utils.op_count import OpCounter, is_host_sync


def test_a_linear_layer_step_is_counted_exactly():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    counter = OpCounter()
    with counter:
        with counter.phase("forward"):
            loss = lin(x).relu().sum()
        with counter.phase("backward"):
            loss.backward()
        value = loss.item()  # outside any phase: "other"
        kept = x[x[:, 0] > 0]
    # Linear on a 2-d input is t + addmm; relu saves its output for backward (a detach).
    assert dict(counter.ops["forward"]) == {"t": 1, "addmm": 1, "relu": 1, "detach": 1, "sum": 1}
    assert counter.total("forward") == 5 and counter.total_syncs("forward") == 0
    assert counter.ops["backward"]["threshold_backward"] == 1
    assert counter.ops["backward"]["mm"] == 1  # the weight's gradient
    assert dict(counter.syncs["other"]) == {"_local_scalar_dense": 1, "index": 1}
    assert counter.total_syncs() == 2
    assert value == loss.item() and len(kept) == int((x[:, 0] > 0).sum())


def test_nested_phases_count_in_the_innermost():
    counter = OpCounter()
    a = torch.ones(3)
    with counter:
        with counter.phase("outer"):
            a + 1
            with counter.phase("inner"):
                a * 2
                a * 3
    assert counter.total("outer") == 1 and counter.total("inner") == 2 and counter.total() == 3


def test_which_operators_are_host_syncs():
    mask = torch.tensor([True, False])
    assert is_host_sync("nonzero", (mask,), {})
    assert is_host_sync("index", (torch.ones(2), [mask]), {})
    assert not is_host_sync("index", (torch.ones(2), [torch.tensor([0])]), {})
    assert is_host_sync("repeat_interleave", (torch.ones(2), torch.tensor([1, 2])), {})
    assert not is_host_sync(
        "repeat_interleave", (torch.ones(2), torch.tensor([1, 2])), {"output_size": 3}
    )
    assert not is_host_sync("add", (torch.ones(2), 1), {})


def test_a_benchmark_step_reports_its_phases_and_leaves_the_model_as_it_was():
    from detectron2.utils.events import EventStorage

    from aligndet_d2.experiment.steps import build_step, instrument, run_step

    setup = build_step("faster_rcnn", "supervised_frozen", num_batches=1)
    counter = OpCounter()
    with EventStorage(), instrument(setup, counter.phase), counter:
        run_step(setup, 0, counter.phase)
    assert {"forward", "backward", "optimizer step"} <= set(counter.ops)
    assert counter.ops["forward"]["convolution"] > 0
    assert counter.ops["backward"]["convolution_backward"] > 0
    assert "forward" not in vars(setup.model)  # the wrapper is gone: the class's forward again
