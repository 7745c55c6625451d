"""`python -m orchestrator.sweep SPEC`: plan, execute on Ray, track in MLflow, and render the paper's tables.

Read top to bottom, `main` is the whole story: validate everything (exit 2 on bad input, nothing started) ->
plan (`--dry-run` stops here) -> start MLflow (unless `--tracking-uri`) and Ray -> run the shared stages and the
cells -> aggregate the tables into `<storage>/results/<sweep>/` and onto the parent run -> stop what we started.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from orchestrator.spec import SpecError, SweepSpec, load_spec

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage dump -> our one line, exit 2
        raise SpecError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m orchestrator.sweep",
                description="Run a robustification sweep (Ray Tune x Ray Train, tracked in MLflow).")
    p.add_argument("spec", help="sweep YAML, e.g. sweeps/teacher_vs_student.yaml")
    p.add_argument("--profile", default="local", help="profile defined in the sweep file (local | paper)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the resolved spec, e.g. --set train.epochs=3")
    p.add_argument("--dry-run", action="store_true", help="print cells, stages, cache state and cost; start nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: one JSON object")
    p.add_argument("--tracking-uri", help="MLflow tracking server (default: a local server over <storage>/mlflow)")
    p.add_argument("--storage", default="./runs", help="results, stage cache and local MLflow store (default ./runs)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--rerun-failed", action="store_true", help="rerun only the cells whose runs FAILED")
    p.add_argument("--no-feature-cache", action="store_true",
                   help="encode images with the full student every batch (benchmark baseline)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--mlflow-patience", type=float, default=300.0,
                   help="seconds to keep retrying an unreachable MLflow before stopping the sweep")
    return p


# ------------------------------------------------------------------------------------------------ validation


MIN_FREE_ENV = "ROBUSTIFY_MIN_FREE_MIB"  # free space a sweep needs on --storage before it starts (MiB)


def check_storage(storage: str) -> None:
    """An unwritable or full storage is bad input: say so before anything starts."""
    if "://" in storage and not storage.startswith("file://"):
        return  # object stores are checked by pyarrow on first write
    path = Path(storage.removeprefix("file://"))
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as err:
        raise SpecError(f"--storage {storage!r}: not writable ({err.strerror or err}); "
                        "give a writable folder or a s3:// URI") from None
    need_mib = int(os.environ.get(MIN_FREE_ENV, "256"))
    st = os.statvfs(path)
    free_mib = st.f_bavail * st.f_frsize // 2**20
    if free_mib < need_mib:
        raise SpecError(f"--storage {storage!r}: {free_mib} MiB free, a sweep needs at least {need_mib} MiB "
                        f"({MIN_FREE_ENV}); free space or choose another folder")


def check_data_roots(spec: SweepSpec, spec_path: str) -> None:
    if spec.data.source == "embedded":
        return
    from trainables.data import check_roots

    needed = _needed_roots(spec)
    problems = check_roots(spec.data.roots, needed)
    mapping = spec.data.roots.get("objectnet_mapping")
    if any(s.value in ("objectnet", "objectnet_c") for s in spec.eval) and not (mapping and Path(mapping).is_file()):
        problems.append(f"ObjectNet needs objectnet_mapping: a JSON file {{objectnet folder: [wnid, ...]}} for its "
                        f"113 ImageNet classes; got {mapping or 'nothing'}")
    if problems:
        raise SpecError(f"{spec_path}: profile {spec.profile!r}: key 'data.roots': {problems[0]}"
                        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def _needed_roots(spec: SweepSpec) -> list[str]:
    suite_roots = {"clean": "imagenet", "c": "imagenet_c", "p": "imagenet_p", "v2": "imagenet_v2",
                   "r": "imagenet_r", "sketch": "imagenet_sketch", "a": "imagenet_a", "objectnet": "objectnet",
                   "objectnet_c": "objectnet"}
    needed = ["imagenet"] + [suite_roots[s.value] for s in spec.eval if s.value in suite_roots]
    if any(s.value == "transfer" for s in spec.eval):
        needed += [k for k in spec.data.roots if k in ("tiny_imagenet", "flowers102", "stanford_cars", "cifar100",
                                                       "fgvc_aircraft", "sun397")] or ["tiny_imagenet"]
    return list(dict.fromkeys(needed))


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        spec = load_spec(args.spec, args.profile, args.overrides)
        if not args.dry_run:
            check_storage(args.storage)
        check_data_roots(spec, args.spec)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from orchestrator.cache import Cache
    from orchestrator.plan import build_plan, dry_run_report, format_report

    if args.dry_run:
        cache = Cache(args.storage) if Path(args.storage).exists() or "://" in args.storage else None
        plan = build_plan(spec, cache.has if cache else None)
        report = dry_run_report(plan)
        print(json.dumps(report, indent=1) if args.json else format_report(report))
        return 0
    return _run(args, spec)


def _run(args: argparse.Namespace, spec: SweepSpec) -> int:
    """Our own MLflow server (no `--tracking-uri`) is launched first: it boots while torch, MLflow and Ray load."""
    from orchestrator.mlflow_server import LocalMlflowServer

    server = None if args.tracking_uri else LocalMlflowServer(Path(args.storage).resolve() / "mlflow").launch()
    try:
        from orchestrator import runner

        return runner.run_sweep(spec, args, server)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
