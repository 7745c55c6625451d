"""`python -m orchestrator.sweep SPEC [SPEC ...]`: plan, execute on Ray, track in MLflow, and render the paper's tables.

Read top to bottom, `main` is the whole story: validate everything (exit 2 on bad input, nothing started) ->
plan (`--dry-run` stops here) -> start MLflow (unless `--tracking-uri`) and Ray -> run the shared stages and the
cells -> aggregate the tables into `<storage>/results/<sweep>/` and onto the parent run -> stop what we started.
Several spec files run in one invocation, one after the other, on the same Ray, MLflow server and stage cache.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
from pathlib import Path

from orchestrator import checks
from orchestrator.checks import (  # noqa: F401
    MIN_FREE_ENV,
    SWEEP_TRACKING,
    check_cluster,
    check_env,
    check_positive_seconds,
    check_ray_address,
    check_tracking_uri,
    make_dir,
    parse_ray_address,
    parse_uri,
    storage_path,
)
from orchestrator.inputs import BadInput, one_line, report_bug, show, show_path
from orchestrator.spec import SpecError, SweepSpec, load_spec
from orchestrator.storage import local_dir

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage dump -> our one line, exit 2
        raise SpecError(f"{self.prog}: {message}")


def build_parser(prog: str = "python -m orchestrator.sweep") -> argparse.ArgumentParser:
    """Every flag's help ends with its default (`--help`)."""
    p = _Parser(
        prog=prog,
        description="Run robustification sweeps (Ray Tune x Ray Train, tracked in MLflow).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "specs",
        nargs="+",
        metavar="SPEC",
        help="sweep YAML file(s), e.g. sweeps/smoke.yaml or sweeps/*.yaml: several run one after the other on one "
        "Ray and one MLflow, sharing the stage cache",
    )
    p.add_argument(
        "--profile",
        default="local",
        help="profile of the sweep file (local | paper); 'local' needs no definition: built-in local defaults",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the resolved spec, e.g. --set train.epochs=3",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print cells, stages, cache state, cost and trial packing; start nothing"
    )
    p.add_argument("--json", action="store_true", help="with --dry-run: one JSON object (a list for several specs)")
    _service_flags(p)
    p.add_argument("--rerun-failed", action="store_true", help="rerun only the cells whose runs FAILED")
    p.add_argument(
        "--no-feature-cache",
        action="store_true",
        help="encode images with the full student every batch (benchmark baseline)",
    )
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray; None: all of this machine's")
    return p


def _service_flags(p: argparse.ArgumentParser) -> None:
    """Where the sweep runs and logs: MLflow, storage, the Ray cluster, and how long to wait for MLflow."""
    p.add_argument("--tracking-uri", help="MLflow tracking server; None: a local server over <storage>/mlflow")
    p.add_argument("--storage", default="./runs", help="results, stage cache and local MLflow store")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS") or None,  # `ray job submit` hands its driver the cluster this way
        help="Ray cluster address (host:port, ray://, auto); None: $RAY_ADDRESS if set, else start a local Ray",
    )
    p.add_argument(
        "--mlflow-patience",
        type=float,
        default=300.0,
        help="seconds to keep retrying an unreachable MLflow before stopping the sweep",
    )


# ------------------------------------------------------------------------------------------------ validation

DRY_RUN_CELLS = 50  # cells a text dry run lists one per line; the rest are counted (--json lists every cell)


def check_flags(args: argparse.Namespace) -> None:
    """Flags that are not files: numbers in range, URIs and the Ray address well-formed (nothing contacted)."""
    check_positive_seconds(args.mlflow_patience, "--mlflow-patience")
    if args.num_cpus is not None and not 1 <= args.num_cpus <= 4096:
        raise SpecError(f"--num-cpus {args.num_cpus}: allowed: 1 to 4096")
    if args.tracking_uri is not None:
        parse_uri(args.tracking_uri, "--tracking-uri", SWEEP_TRACKING, "an MLflow tracking server")
    if args.address is not None:
        parse_ray_address(args.address)


def check_storage(storage: str, dry_run: bool = False) -> None:
    """An unusable, unwritable or full storage is bad input: say so before anything starts, creating nothing."""
    if checks.check_storage(storage, dry_run=dry_run) is None and not dry_run:
        from orchestrator.storage import bucket_missing

        why = bucket_missing(storage)  # read-only: one metadata request to the object store
        if why is not None:
            raise SpecError(f"--storage {show(storage)}: {why}")


def check_services(args: argparse.Namespace, wants_gpus: bool = False) -> None:
    """Before a run: the tracking server and the Ray cluster answer (read-only requests, short timeouts), and a
    loopback tracking URI is not handed to workers on other hosts (`checks.check_cluster`)."""
    if args.tracking_uri is not None:
        check_tracking_uri(args.tracking_uri)
    if args.address is not None:
        check_ray_address(args.address)
    check_cluster(args.tracking_uri, args.address, wants_gpus)


def check_data_roots(spec: SweepSpec, spec_path: str) -> None:
    if spec.data.source == "embedded":
        return
    from trainables.data import check_roots

    where = f"{show_path(spec_path)}: profile {show(spec.profile)}: key 'data.roots'"
    needed = _needed_roots(spec)
    try:
        problems = check_roots(spec.data.roots, needed)
        mapping = spec.data.roots.get("objectnet_mapping")
        if any(s.value in ("objectnet", "objectnet_c") for s in spec.eval) and not (
            mapping and Path(mapping).is_file()
        ):
            problems.append(
                f"ObjectNet needs objectnet_mapping: a JSON file {{objectnet folder: [wnid, ...]}} for "
                f"its 113 ImageNet classes; got {show(mapping) if mapping else 'nothing'}"
            )
    except (OSError, ValueError) as err:  # a name too long, a NUL byte, a loop of symlinks: not a usable path
        raise SpecError(
            f"{where}: a root is not a usable path ({getattr(err, 'strerror', None) or err}): "
            f"{show(getattr(err, 'filename', None) or '')}"
        ) from None
    if problems:
        raise SpecError(f"{where}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def _needed_roots(spec: SweepSpec) -> list[str]:
    suite_roots = {
        "clean": "imagenet",
        "c": "imagenet_c",
        "p": "imagenet_p",
        "v2": "imagenet_v2",
        "r": "imagenet_r",
        "sketch": "imagenet_sketch",
        "a": "imagenet_a",
        "objectnet": "objectnet",
        "objectnet_c": "objectnet",
    }
    needed = ["imagenet"] + [suite_roots[s.value] for s in spec.eval if s.value in suite_roots]
    if any(s.value == "transfer" for s in spec.eval):
        needed += [
            k
            for k in spec.data.roots
            if k in ("tiny_imagenet", "flowers102", "stanford_cars", "cifar100", "fgvc_aircraft", "sun397")
        ] or ["tiny_imagenet"]
    return list(dict.fromkeys(needed))


# ------------------------------------------------------------------------------------------------ main


def validate(argv: list[str] | None, prog: str | None = None) -> tuple[argparse.Namespace, list[SweepSpec]]:
    """Every check of every spec file, cheapest first; creates nothing, starts nothing, and contacts servers only
    for a real run. Several files are all checked before any runs: a typo in the last must not surface after
    the first has run for an hour.

    Raises:
        BadInput: the first problem, as one line for a person.
    """
    args = (build_parser(prog) if prog else build_parser()).parse_args(argv)
    check_flags(args)
    check_env()
    specs = [load_spec(path, args.profile, args.overrides) for path in args.specs]
    check_distinct_names(args.specs, specs)
    check_storage(args.storage, dry_run=args.dry_run)
    for path, spec in zip(args.specs, specs, strict=True):
        check_data_roots(spec, path)
        check_footprint(spec, path)
    if not args.dry_run:
        check_services(args, any(s.resources.gpus_per_worker > 0 for s in specs))
    return args, specs


def check_footprint(spec: SweepSpec, spec_path: str) -> None:
    """Refuse a plan whose hungriest stage needs more memory than the declared node has (the cost model's
    footprint, orchestrator/costs.py): better one line now than a worker killed by the OOM killer hours later."""
    declared = spec.resources.node_memory_gb
    if declared is None:
        return
    from orchestrator.costs import hungriest
    from orchestrator.plan import build_plan

    kind, need = hungriest(build_plan(spec))
    if need > declared:
        raise SpecError(
            f"{show_path(spec_path)}: profile {show(spec.profile)}: key 'resources.node_memory_gb' = {declared:g}: "
            f"stage {kind} needs about {need:.1f} GB at this profile's sizes; allowed: a node memory of at least "
            f"{need:.1f} GB, or smaller data sizes (data.n_train, data.n_test, data.c_per_cell, pool.n_images)"
        )


def check_distinct_names(paths: list[str], specs: list[SweepSpec]) -> None:
    """A sweep's name is its MLflow experiment and its results folder: two in one invocation would mix."""
    seen: dict[str, str] = {}
    for path, spec in zip(paths, specs, strict=True):
        if spec.name in seen:
            raise SpecError(
                f"{show_path(path)}: sweep name {show(spec.name)} is also the name of {show_path(seen[spec.name])}; "
                "the sweeps of one invocation need distinct names (each is an MLflow experiment and a results folder)"
            )
        seen[spec.name] = path


EXIT_BROKEN_PIPE = 141  # what a shell reports for a writer whose reader went away (`... --dry-run | head`)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """The CLI (also `robustify sweep`, orchestrator/cli.py, which passes its own `prog`); returns the exit code."""
    try:
        args, specs = validate(argv, prog)
        if args.dry_run:
            return _dry_runs(args, specs)
        local = make_dir(storage_path(args.storage) or local_dir(args.storage), "--storage")  # the first thing created
        args.storage = str(local) if storage_path(args.storage) is not None else args.storage
    except BadInput as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # not a bug: stdout's reader closed it; silence the interpreter's own flush too
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    except Exception as err:  # noqa: BLE001 - a bug: one line for people, the traceback in a file
        return report_bug(err)
    try:
        return _run(args, specs)
    except Exception as err:  # noqa: BLE001 - runner reports its own; this is launching/stopping the server
        return report_bug(err)


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # in-process callers (tests) may have replaced sys.stdout


def _dry_runs(args: argparse.Namespace, specs: list[SweepSpec]) -> int:
    """Plan and print every spec; `--json` prints one object for one spec (as always), a list for several, each
    with its `invocation` share (what it computes after the sweeps before it, `plan.invocation_shares`).

    Reads the stage cache only if it is already on local disk (no folder made, no network)."""
    from orchestrator.plan import build_plan, dry_run_report, invocation_shares
    from orchestrator.plan_text import format_invocation

    cached = _cached_on_disk(args.storage)
    plans = [build_plan(spec, cached) for spec in specs]
    reports = [{**dry_run_report(plan), "packing": _packing(args, plan)} for plan in plans]
    if len(plans) == 1:
        print(json.dumps(reports[0], indent=1) if args.json else _dry_run_text(reports[0]))
        return 0
    shares = invocation_shares(plans)
    for report, share in zip(reports, shares, strict=True):
        report["invocation"] = share
    if args.json:
        print(json.dumps(reports, indent=1))
        return 0
    print("\n\n".join([_dry_run_text(r) for r in reports] + ["\n".join(format_invocation(shares))]))
    return 0


def _dry_run_text(report: dict) -> str:
    from orchestrator.plan_text import format_packing, format_report

    cells = report["cells"]
    lines = format_report({**report, "cells": cells[:DRY_RUN_CELLS]}).splitlines()
    if len(cells) > DRY_RUN_CELLS:
        lines.insert(1 + DRY_RUN_CELLS, f"  ... and {len(cells) - DRY_RUN_CELLS:,} more cells (--json lists all)")
    return "\n".join(lines + format_packing(report["packing"]))


def _packing(args: argparse.Namespace, plan) -> dict:
    """How the cells would be packed into trials (`driver._packs`), on the Ray this command would use, without
    starting or joining it: a local Ray gets this machine's CPUs (or `--num-cpus`) and GPUs; a cluster's
    resources are unknown until it is joined, unless the spec fixes the trials at once itself."""
    from orchestrator import ray_backend
    from orchestrator.plan import pending_cells, trial_packs

    res = plan.spec.resources
    if args.address is not None and res.max_concurrent_trials is None:
        return {
            "where": f"the cluster at {args.address}",
            "trials": None,
            "note": "packing depends on the cluster's resources (set resources.max_concurrent_trials to fix it)",
        }
    gpus = _local_gpus() if res.gpus_per_worker > 0 and args.address is None else 0
    cpus = float(args.num_cpus or os.cpu_count() or 1)
    info = ray_backend.ClusterInfo(cpus, float(gpus), True, args.address is None)
    gpw = res.gpus_per_worker if ray_backend.uses_gpus(info, res.gpus_per_worker) else 0.0
    n = max(1, len(pending_cells(plan)))
    per_trial = (res.workers_per_trial, res.cpus_per_worker, gpw)
    slots = ray_backend.max_concurrent(info, *per_trial, n, res.max_concurrent_trials)
    where = f"the cluster at {args.address}" if args.address else f"the local Ray ({cpus:g} CPUs, {gpus} GPUs)"
    labels = {plan.cell_stage[c]: c.label() for c in plan.cells}
    return {"where": where, "slots": slots, "trials": trial_packs(plan, slots), "labels": labels}


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _cached_on_disk(storage: str):
    """`Cache.has` for a dry run, without `Cache` (which creates `<storage>/cache` and may contact an object
    store): None when the cache is remote or not there yet."""
    from orchestrator.cache import MANIFEST

    path = storage_path(storage)
    root = path.resolve() / "cache" if path is not None else None
    if root is None or not root.is_dir():
        return None
    return lambda kind, key: (root / kind / key / MANIFEST).is_file()


def _run(args: argparse.Namespace, specs: list[SweepSpec]) -> int:
    """Our own MLflow server (no `--tracking-uri`) is launched first: it boots while torch, MLflow and Ray load.
    One server and one Ray serve every spec of the invocation (`runner.run_sweeps`)."""
    from orchestrator.mlflow_server import LocalMlflowServer

    host = checks.mlflow_host(args.address)
    store = local_dir(args.storage) / "mlflow"  # with s3:// storage: this node's working folder (docs/cluster.md)
    server = None if args.tracking_uri else LocalMlflowServer(store, host=host).launch()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill PID` stops like Ctrl-C (see ray_backend.start)
    try:
        from orchestrator import runner

        return runner.run_sweeps(specs, args, server)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
