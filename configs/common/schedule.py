# Step schedules in relative units (epochs), so that they follow any override of train.max_iter.
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler


def step_schedule(length=12, steps=(8, 11), warmup_fraction=0.0, warmup_factor=0.001):
    """lr x0.1 at each of `steps` (in units of which the run has `length`), after a linear warmup
    over `warmup_fraction` of the run."""
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[0.1**i for i in range(len(steps) + 1)],
            milestones=list(steps),
            num_updates=length,
        ),
        warmup_length=warmup_fraction,
        warmup_method="linear",
        warmup_factor=warmup_factor,
    )
