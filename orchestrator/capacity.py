"""What the cluster can hold and what its queued work waits for: plain arithmetic on numbers Ray reports.

Why apart from the Ray adapter (orchestrator/ray_backend.py, which re-exports these): nothing here calls Ray, so
it can be read and tested without a cluster, and the adapter keeps only the Ray mechanics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

TRIAL_DRIVER = "trial_driver"
WAITED_ON = ("GPU", "CPU", TRIAL_DRIVER)  # the resources our work asks for, the scarcest first


@dataclass
class ClusterInfo:
    cpus: float
    gpus: float
    has_driver_resource: bool
    started_here: bool
    reachable_gpus: float = 0.0  # GPUs an autoscaler may add up to (its config's node types x max_workers)


def uses_gpus(info: ClusterInfo, gpus_per_worker: float) -> bool:
    """Request GPUs? On a cluster we joined, yes whenever the spec asks for them, even if no GPU node is up yet:
    an autoscaling cluster (cluster.yaml: GPU workers from 0) only adds GPU nodes for work that requests GPUs.
    On a Ray we started here, only if this machine has one (the CPU fallback: gloo, no GPU request)."""
    return gpus_per_worker > 0 and (info.gpus > 0 or not info.started_here)


def max_concurrent(
    info: ClusterInfo, workers: int, cpus: float, gpus: float, n_cells: int, explicit: int | None
) -> int:
    """How many trials fit at once: GPU-bound on a GPU cluster, CPU-bound otherwise. On a joined cluster the GPUs
    it can reach count (its autoscaler's maximum), not only those up now; with neither known, every trial at once,
    so an autoscaler sees the whole demand."""
    if explicit:
        return max(1, min(explicit, n_cells))
    if gpus > 0:
        reach = max(info.gpus, info.reachable_gpus)
        fit = int(reach // (workers * gpus)) if reach else (n_cells if not info.started_here else 1)
    else:
        fit = int(info.cpus // (workers * cpus)) if info.cpus else 1
    return max(1, min(fit, n_cells))


def autoscaler_gpus(path: Path) -> float:
    """GPUs the cluster can grow to, from the autoscaler's config on the head (the launcher writes it to
    ~/ray_bootstrap_config.yaml; `ray start --autoscaling-config` reads it): each node type's GPUs times its
    max_workers, within the cluster's max_workers. 0 when there is no such file (no autoscaler we can read)."""
    try:
        cfg = yaml.safe_load(Path(path).expanduser().read_text()) or {}
        types = cfg.get("available_node_types") or {}
        budget = int(cfg.get("max_workers", 10**6))
        per_node = sorted(
            ((float((t.get("resources") or {}).get("GPU", 0)), int(t.get("max_workers", 0))) for t in types.values()),
            reverse=True,
        )
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return 0.0
    total = 0.0
    for gpus, count in per_node:  # the largest GPU nodes first, as many as the cluster's budget of workers allows
        n = min(count, budget)
        total, budget = total + gpus * n, budget - n
    return total


def describe_wait(
    pending: dict[tuple, int], total: dict[str, float], free: dict[str, float], nodes: list[dict], starting: int
) -> str | None:
    """The words of `waiting_for`, from plain numbers: the scarcest resource that a pending request (a bundle of
    resources -> how many such requests) asks for beyond what is free; the cluster's use of it, or, when no node has
    it, how many nodes with it are up of those up or starting (an autoscaler adds nodes for pending demand)."""
    for res in WAITED_ON:
        for bundle, count in pending.items():
            amount = dict(bundle).get(res, 0.0)
            if amount <= free.get(res, 0.0) + 1e-9:
                continue
            what = f"waiting for {amount:g} {res}" + (f" (x{count})" if count > 1 else "")
            if not total.get(res):
                up = sum(1 for n in nodes if n.get(res))
                return f"{what}: {up} of {up + starting} nodes up" if starting else f"{what}: no node has one"
            used = f"{total[res] - free.get(res, 0.0):g} of {total[res]:g} in use"
            return f"{what}: {used}" + (f", {starting} node(s) starting" if starting else "")
    return None
