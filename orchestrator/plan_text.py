"""The dry run as text: what `--dry-run` prints from `plan.dry_run_report` and the packing (pure: dict in, lines
out), kept apart from the planning itself."""

from __future__ import annotations

from typing import Any


def format_report(report: dict[str, Any]) -> str:
    """Human-readable dry run."""
    lines = [f"sweep {report['sweep']} (profile {report['profile']}): {report['n_cells']} cells"]
    for c in report["cells"]:
        lines.append(f"  cell {c['key'][:10]}  {c['label']}")
    kinds: dict[str, list[dict]] = {}
    for s in report["stages"]:
        kinds.setdefault(s["name"], []).append(s)
    lines.append("stages (unique; cached/total):")
    for kind, ss in kinds.items():
        lines.append(f"  {kind:<18} {sum(s['cached'] for s in ss)}/{len(ss)}")
        lines.extend(f"    note: {n}" for n in sorted({s["note"] for s in ss if s.get("note")}))
    cost = report["cost"]
    lines.append(
        f"estimated cost on '{cost['device']}': {cost['total_device_hours']:.3f} device-hours "
        f"({cost['remaining_device_hours']:.3f} not cached)"
    )
    for kind, c in cost["per_kind"].items():
        lines.append(f"  {kind:<18} x{c['count']:<3} {c['device_hours']:.3f} h")
    return "\n".join(lines + format_footprint(report["footprint"]))


def format_invocation(shares: list[dict[str, Any]]) -> list[str]:
    """Text lines of `plan.invocation_shares`: several specs in one invocation against each file on its own."""
    joint = sum(s["device_hours"] for s in shares)
    alone = sum(s["device_hours_alone"] for s in shares)
    lines = [
        f"all {len(shares)} sweeps in this invocation, in order (one cache: a stage is computed by the first sweep "
        f"that needs it): {joint:.3f} device-hours not cached, against {alone:.3f} for the files run one by one"
    ]
    for s in shares:
        lines.append(
            f"  {s['sweep']:<22} {s['device_hours']:.3f} h  {s['stages']} stage(s) to compute, "
            f"{s['stages_from_earlier_sweeps']} from earlier sweeps (alone: {s['device_hours_alone']:.3f} h)"
        )
    return lines


def format_footprint(fp: dict[str, Any]) -> list[str]:
    """Text lines of the footprint: per kind the disk its stages write and the memory of its largest stage."""
    node = fp.get("node_memory_gb")
    lines = [
        f"footprint: {_gb(fp['total_disk_gb'])} on disk ({_gb(fp['remaining_disk_gb'])} not cached), peak memory "
        f"{_gb(fp['peak_memory_gb'])} per process"
        + (f", {_gb(fp['peak_gpu_gb'])} per GPU " if fp["peak_gpu_gb"] else " ")
        + (f"(node memory {node:g} GB)" if node is not None else "(resources.node_memory_gb not declared)")
    ]
    for kind, f in fp["per_kind"].items():
        gpu = f"   peak GPU {_gb(f['peak_gpu_gb']):>10}" if fp["peak_gpu_gb"] else ""
        lines.append(f"  {kind:<18} disk {_gb(f['disk_gb']):>10}   peak memory {_gb(f['peak_memory_gb']):>10}{gpu}")
    return lines


def _gb(x: float) -> str:
    return f"{x * 1000:.1f} MB" if x < 1 else f"{x:,.1f} GB"


def format_packing(packing: dict[str, Any], shown: int = 10) -> list[str]:
    """Text lines of the dry run's `packing` entry (`sweep._packing`): the trials, or why they are unknown."""
    where = packing["where"]
    trials = packing.get("trials")
    if trials is None:
        return [f"packing on {where}: {packing['note']}"]
    n = sum(len(t) for t in trials)
    head = f"packing on {where}: {n} cell(s) to run as {len(trials)} Ray Tune trial(s), {packing['slots']} at a time"
    lines = [head + (f"; largest trial {max(map(len, trials))} cells" if trials else "")]
    labels = packing.get("labels", {})
    for i, t in enumerate(trials[:shown], 1):
        names = ", ".join(labels.get(k, k[:10]) for k in t[:3]) + (f", ... (+{len(t) - 3})" if len(t) > 3 else "")
        lines.append(f"  trial {i:<3} {len(t)} cell(s): {names}")
    if len(trials) > shown:
        lines.append(f"  ... and {len(trials) - shown} more trials")
    return lines
