"""Complete fine-tuning (the `full_finetune` stage), and the evaluation of the two cells built on it: `full_ft`
(the fine-tuned student) and `wise_ft` (its weight-space ensemble with the original). Both train the frozen part
too, so neither can use cached features: they are evaluated from images."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables import outcomes
from trainables.artifacts import load_bundles, load_pool, student_from_deps
from trainables.augment import sample_fraction
from trainables.common import (
    StageContext,
    Timer,
    iterate_minibatches,
    load,
    precise_bn,
    read_metrics,
    save,
    seed_everything,
    to_float,
)
from trainables.evaluate import classifier_predictor, evaluate_suites
from trainables.kinds import CellInputs, FullFinetuneInputs, body
from trainables.shards import Picked
from trainables.train_loop import adam, run_epochs
from trainables.vocab import Method


@body("full_finetune")
def full_finetune(inputs: FullFinetuneInputs, deps: dict[str, Path], out: Path, ctx: StageContext) -> dict[str, float]:
    """Complete fine-tuning: every parameter of the student on clean ∪ augmented images (expensive baseline)."""
    tr, seed = inputs.train, inputs.seed
    bundles = load_bundles(deps["eval"])
    student = student_from_deps(inputs.model, inputs.data["image_size"], deps, bundles["classes"], tr["dropout"])
    pool = load_pool(deps["pool"])
    a = inputs.data_fraction
    ci = sample_fraction(len(pool["train"]["y"]), a, seed)
    pi = sample_fraction(len(pool["pool"]["y"]), a, seed)
    x = Picked((pool["train"]["x"], ci), (pool["pool"]["x"], pi))  # index views, gathered per batch
    y = torch.cat([pool["train"]["y"][ci], pool["pool"]["y"][pi]])
    student.set_frozen_trainable(True)
    g = seed_everything(seed)
    optim = adam(
        [
            p
            for n, p in student.named_parameters()
            if p.requires_grad and not n.startswith(("original_tail.", "heads.clean", "heads.unclean"))
        ],
        tr["full_ft_lr"],
    )

    def step(idx: Tensor, _step: int) -> tuple[Tensor, dict[str, Tensor]]:
        loss = F.cross_entropy(student(to_float(x[idx]), head="combined"), y[idx])
        return loss, {"loss": loss.detach()}

    with Timer() as t:
        run_epochs(
            student,
            optim,
            tr["full_ft_epochs"] or tr["epochs"],
            lambda _: iterate_minibatches(len(x), tr["batch_size"], g),
            step,
            ctx,
        )
        # only the modules the combined path runs: S0's (original_tail) buffers must stay S0's, not be reset and
        # never refilled (issue #13)
        live = nn.ModuleList([student.frozen, student.trunk, student.heads["combined"]])
        precise_bn(live, x, lambda z: student(z, head="combined"), seed=inputs.seed)
    student.set_frozen_trainable(False)
    student.eval()
    save(student.state_dict(), out / "model.pt")
    (out / "model.json").write_text((deps["student"] / "model.json").read_text() if "student" in deps else "{}")
    return {"time/train_s": t.s, "time/stage_s": t.s}


def evaluate_full(inputs: CellInputs, deps: dict[str, Path], out: Path | None = None) -> dict[str, float]:
    """A `full_ft` or `wise_ft` cell: nothing to train here, the `full_finetune` entry (deps["full_ft"]) holds it.
    With `out`, also its per-example outcomes file (trainables/outcomes.py)."""
    tr = inputs.train
    bundles = load_bundles(deps["eval"])
    base = student_from_deps(inputs.model, inputs.data["image_size"], deps, bundles["classes"], tr["dropout"]).eval()
    tuned = copy.deepcopy(base)
    tuned.load_state_dict(load(deps["full_ft"] / "model.pt"))
    if inputs.method == Method.wise_ft:  # weight-space ensemble of the original and the fine-tuned model
        w = tr["wise_alpha"]
        sd0, sd1 = base.state_dict(), tuned.state_dict()
        tuned.load_state_dict({k: (1 - w) * sd0[k] + w * sd1[k] if sd0[k].is_floating_point() else sd1[k] for k in sd0})
    tuned.eval()
    net = lambda x: tuned(x, head="combined")  # noqa: E731
    pred = outcomes.memo(classifier_predictor(net))
    with torch.no_grad():
        embed = lambda x: tuned.trunk(tuned.encode(x)).flatten(1)  # noqa: E731
        probes: dict = {}
        metrics = evaluate_suites(pred, bundles, inputs.eval, embed=embed, probe_outcomes=probes)
        if out is not None:
            o = {**outcomes.collect(pred, bundles, list(inputs.eval)), **probes}
            outcomes.save(out / outcomes.OUTCOMES_FILE, o)
    ft = read_metrics(deps["full_ft"])
    counts = tuned.param_counts()
    metrics.update(
        {
            "time/train_s": 0.0,
            "time/full_ft_s": ft.get("time/train_s", 0.0),
            "params/tuned": float(counts["total"]),
            "params/total": float(counts["total"]),
        }
    )
    return metrics
