"""The one training loop: teachers, the pretrained stand-in, the distilled tail and complete fine-tuning all run
their epochs through `run_epochs`, so an epoch's logging, clipping, scheduling and checkpointing mean the same
thing in every stage. What differs per stage, its batches and its loss, is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trainables.common import StageContext

# (batch, step) -> (loss to minimise, {name: detached value}); `step` counts the batches this call has run.
Step = Callable[[Any, int], tuple[Tensor, dict[str, Tensor]]]


@dataclass
class Optim:
    """What updates the parameters: an optimizer, optionally a per-batch LR schedule and gradient-norm clipping.

    Attributes:
        opt: the optimizer.
        params: the parameters it updates (what clipping sees).
        lr: the configured rate, logged as `train/lr` each epoch (not the scheduled one).
        sched: stepped after every optimizer step; None: constant rate.
        clip: max gradient norm; None: no clipping.
    """

    opt: torch.optim.Optimizer
    params: list[nn.Parameter]
    lr: float
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    clip: float | None = None


def adam(params: list[nn.Parameter], lr: float, total_steps: int | None = None, clip: float | None = None) -> Optim:
    """Adam at `lr`; with `total_steps`, under `warmup_cosine` over that many batches."""
    opt = torch.optim.Adam(params, lr=lr)
    return Optim(opt, params, lr, warmup_cosine(opt, total_steps) if total_steps is not None else None, clip)


def warmup_cosine(opt: torch.optim.Optimizer, total_steps: int, warmup: float = 0.1):
    """Linear warm-up over the first 10 % of steps, then cosine decay. Why: training ViTs (and CLIP towers) from
    scratch with a constant Adam step diverges to chance within a few dozen steps; ResNets don't mind."""
    n_warm = max(1, int(warmup * total_steps))

    def factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        t = (step - n_warm) / max(1, total_steps - n_warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@dataclass(frozen=True)
class Checkpoints:
    """Per-epoch checkpoints through `ctx.checkpoint`, and resume from `ctx.resume`.

    A checkpoint holds the module's weights under `key`, the optimizer, the batch-order `generator` and the global
    torch RNG (so dropout masks continue exactly as without the interruption), and the epoch it closes.
    """

    key: str
    generator: torch.Generator

    def state(self, module: nn.Module, opt: torch.optim.Optimizer, epoch: int) -> dict[str, Any]:
        return {
            self.key: module.state_dict(),
            "opt": opt.state_dict(),
            "rng": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch,
        }

    def restore(self, module: nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> int:
        """Load `state`; returns the first epoch still to run."""
        module.load_state_dict(state[self.key])
        opt.load_state_dict(state["opt"])
        self.generator.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["epoch"]) + 1


def run_epochs(
    module: nn.Module,
    optim: Optim,
    epochs: int,
    batches: Callable[[int], Iterable[Any]],
    step: Step,
    ctx: StageContext,
    checkpoints: Checkpoints | None = None,
    after_epoch: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train `module` for `epochs`, logging the mean of every part `step` reports as `train/<part>` per epoch.

    Args:
        module: put in train mode at the start of every epoch (and checkpointed, with `checkpoints`).
        optim: see `Optim`.
        epochs: the total number of epochs (a resumed run starts after its checkpoint's epoch).
        batches: epoch -> that epoch's batches, called once at the epoch's start (so any per-epoch draw it makes
            comes before the batches' own order).
        step: computes one batch's loss; the loop does zero_grad / backward / clip / step / schedule.
        ctx: logging (`ctx.log`), and `ctx.checkpoint` / `ctx.resume` when `checkpoints` is given.
        checkpoints: None: neither checkpoint nor resume.
        after_epoch: called with the epoch after it is logged (e.g. a plateau measurement); None: nothing.

    Returns:
        The last epoch's logged metrics ({} when no epoch ran).
    """
    start = checkpoints.restore(module, optim.opt, ctx.resume) if checkpoints and ctx.resume else 0
    last: dict[str, float] = {}
    n_steps = 0
    for epoch in range(start, epochs):
        module.train()
        sums: dict[str, float] = {}
        nb = 0
        for batch in batches(epoch):
            loss, parts = step(batch, n_steps)
            _update(optim, loss)
            n_steps += 1
            nb += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        last = {f"train/{k}": v / max(nb, 1) for k, v in sums.items()} | {"train/lr": optim.lr}
        ctx.log(last, step=epoch)
        if after_epoch is not None:
            after_epoch(epoch)
        if checkpoints is not None and ctx.checkpoint is not None:
            ctx.checkpoint(checkpoints.state(module, optim.opt, epoch), epoch, last)
    return last


def _update(optim: Optim, loss: Tensor) -> None:
    optim.opt.zero_grad(set_to_none=True)
    loss.backward()
    if optim.clip is not None:
        torch.nn.utils.clip_grad_norm_(optim.params, optim.clip)
    optim.opt.step()
    if optim.sched is not None:
        optim.sched.step()
