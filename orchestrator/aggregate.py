"""`python -m orchestrator.aggregate`: MLflow runs -> the paper's tables and figures beside the paper's numbers.

    python -m orchestrator.aggregate --experiment NAME [--tracking-uri URI] [--out DIR] [--table ID]
                                     [--sweep-id ID] [--storage DIR]
    python -m orchestrator.aggregate --table supp_table5 --profile paper --out DIR   # no MLflow: architectures

Without --tracking-uri it opens the local store `<storage>/mlflow` (default `./runs/mlflow`), starting an MLflow
server on 127.0.0.1 for the duration. Per table it writes `<id>.md`, `.csv`, `.tex` (and `.png` for figures), plus
`index.md`; default output folder `<storage>/results/<experiment>`, as the sweep does.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator import render
from orchestrator.checks import MLFLOW_ENV, READ_TRACKING, check_env, check_tracking_uri, make_dir
from orchestrator.checks import check_storage as check_folder
from orchestrator.inputs import BadInput, check_part, one_line, report_bug, show
from orchestrator.tables import TABLE_IDS, TABLES, TableResult, build_table
from trainables.vocab import did_you_mean

SWEEP_ID = re.compile(r"^[A-Za-z0-9_.:-]+$")


class AggregateError(BadInput):
    """Bad input (unknown table or experiment, unreadable store): the CLI answers it with exit code 2."""


# ------------------------------------------------------------------------------------------------ library


def check_table_ids(ids: Sequence[str] | None) -> list[str] | None:
    """Raise `AggregateError` naming close matches for an unknown table id."""
    for t in ids or []:
        if t not in TABLE_IDS:
            raise AggregateError(
                f"unknown table {show(t)}{did_you_mean(t, TABLE_IDS)}; allowed: {', '.join(TABLE_IDS)}"
            )
    return list(ids) if ids else None


def build_results(runs, tables: Sequence[str] | None = None, outcomes=None) -> list[TableResult]:
    """The chosen tables, built once each; by default every table whose runs are there (`TableResult.complete`:
    e.g. Figure 1 needs APT and ours at two fractions), so a sweep's experiment does not sprout partial views of
    every other table. `outcomes` (run id -> per-example outcomes) is what the claims' intervals come from."""
    if tables:
        return [build_table(TABLES[t], runs, outcomes) for t in check_table_ids(tables)]
    return [res for res in (build_table(TABLES[t], runs, outcomes) for t in TABLE_IDS) if res.complete]


def write_files(out: Path, files: dict[str, str | bytes]) -> list[Path]:
    paths = []
    for name, content in files.items():
        if Path(name).name != name or name in (".", ".."):  # a file name, never a path out of `out`
            raise ValueError(f"table file name {name!r} is not a plain file name")
        path = out / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        paths.append(path)
    return paths


def aggregate_frame(runs, out_dir: str | Path, tables: Sequence[str] | None = None, outcomes=None) -> list[Path]:
    """Render tables from a run DataFrame into `out_dir`; always writes `index.md` (listed last)."""
    return write_results(build_results(runs, tables, outcomes), out_dir)


def write_results(results: Sequence[TableResult], out_dir: str | Path) -> list[Path]:
    """Render built tables into `out_dir`; always writes `index.md` (listed last). Takes the tables, not the
    runs, so the sweep renders its files and its report from one read of MLflow and one build."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    items = []
    for res in results:
        files = write_files(out, render.render_files(res))
        written += files
        items.append((res, [f.name for f in files]))
    index = out / "index.md"
    index.write_text(render.index_markdown(items), encoding="utf-8")
    return written + [index]


def aggregate(
    uri: str, experiment: str, out_dir: str | Path, tables: Sequence[str] | None = None, sweep_id: str | None = None
) -> list[Path]:
    """Read an experiment's finished runs (optionally of one sweep invocation) and render the tables.

    Args:
        uri: tracking URI (the sweep's http:// server).
        experiment: experiment name (= the sweep's name).
        out_dir: where the files go.
        tables: table ids; None = every table whose runs are there (see `build_results`).
        sweep_id: read only runs tagged with this sweep id (several invocations may share an experiment).

    Returns:
        The written files, `index.md` last (the sweep logs them onto its parent run).

    Raises:
        AggregateError: unknown table id or sweep id syntax, or no such experiment.
    """
    from orchestrator.tracking import experiment_exists, outcomes_loader, runs_dataframe

    check_table_ids(tables)
    if sweep_id is not None and not SWEEP_ID.match(sweep_id):
        raise AggregateError(f"sweep id {show(sweep_id)} has characters outside [A-Za-z0-9_.:-]")
    if not experiment_exists(uri, experiment):
        raise AggregateError(f"no experiment {show(experiment)} at {uri}")
    runs = runs_dataframe(uri, experiment, f"tags.sweep_id = '{sweep_id}'" if sweep_id else "")
    return aggregate_frame(runs, out_dir, tables, outcomes_loader(uri))


def supp_table5_paper(out_dir: str | Path) -> Path:
    """Table 5 from the real architectures at paper settings (meta device, nothing downloaded): no MLflow.

    Writes `supp_table5.csv` with columns student, params_tuned, params_total, one row per registered student."""
    import pandas as pd

    from trainables.models import supp_table5_rows  # lazy: torch/timm/open_clip only on this path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(supp_table5_rows(), columns=["student", "params_tuned", "params_total"])
    path = out / "supp_table5.csv"
    df.to_csv(path, index=False, lineterminator="\n")
    return path


# ------------------------------------------------------------------------------------------------ CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints the usage block too)
        raise AggregateError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m orchestrator.aggregate",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,  # every flag's help ends with its default
    )
    p.add_argument("--experiment", help="experiment name (= the sweep's name)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI; None: a server on <storage>/mlflow")
    p.add_argument("--out", help="output folder; None: <storage>/results/<experiment>")
    p.add_argument(
        "--table",
        action="append",
        dest="tables",
        metavar="ID",
        help=f"table id, repeatable; None: every table with data ({', '.join(TABLE_IDS)})",
    )
    p.add_argument("--sweep-id", help="read only this sweep invocation's runs; None: those of every invocation")
    p.add_argument(
        "--profile",
        choices=["local", "paper"],
        default="local",
        help="with --table supp_table5 and paper: count the architectures at paper settings",
    )
    p.add_argument("--storage", default="runs", help="the sweep's storage folder")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 for bad input, with one line on stderr)."""
    try:
        args, tables = _validate(argv)
        if args.profile == "paper" and tables and "supp_table5" in tables:
            print(supp_table5_paper(make_dir(_out_dir(args, "paper"), "--out")))
            tables = [t for t in tables if t != "supp_table5"]
            if not tables:
                return 0
        if not args.experiment:
            raise AggregateError("--experiment NAME is required (the sweep's name)")
        for f in _from_mlflow(args, tables):
            print(f)
        return 0
    except BadInput as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except Exception as err:  # noqa: BLE001 - a bug: one line for people, the traceback in a file
        return report_bug(err)


def _validate(argv: list[str] | None) -> tuple[argparse.Namespace, list[str] | None]:
    """Every check before anything is started or written: flags, names that become paths, folders, the URI."""
    args = _parser().parse_args(argv)
    check_env(MLFLOW_ENV)
    if args.experiment is not None:
        check_part(args.experiment, "--experiment")  # it names the default output folder
    tables = check_table_ids(args.tables)
    if args.sweep_id is not None and not (SWEEP_ID.match(args.sweep_id) and len(args.sweep_id) <= 200):
        raise AggregateError(f"--sweep-id {show(args.sweep_id)}: allowed: up to 200 characters from [A-Za-z0-9_.:-]")
    if "://" in args.storage:
        raise AggregateError(f"--storage {show(args.storage)}: expected the sweep's local storage folder")
    check_folder(args.storage, flag="--storage", dry_run=True)
    if args.out is not None and "://" in args.out:
        raise AggregateError(f"--out {show(args.out)}: expected a local folder")
    out = _out_dir(args, args.experiment or "paper")  # a folder, or creatable under a writable folder
    check_folder(str(out), flag="--out" if args.out else "--storage", need_free=False)
    if args.tracking_uri is not None and args.experiment:
        check_tracking_uri(args.tracking_uri, kinds=READ_TRACKING)
    return args, tables


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    """`--out`, or `<storage>/results/<name>` (name already a safe path part): always inside what was given."""
    return Path(args.out) if args.out else Path(args.storage) / "results" / name


def _from_mlflow(args: argparse.Namespace, tables: list[str] | None) -> list[Path]:
    from orchestrator.tracking import LocalMlflowServer, TrackingUnavailable, experiment_exists, unreachable_reason

    server = None
    try:
        uri = args.tracking_uri
        if not uri:
            store = Path(args.storage) / "mlflow"
            if not (store / "mlflow.db").is_file():
                raise AggregateError(
                    f"no local MLflow store at {store} (run a sweep first, or pass --tracking-uri / --storage)"
                )
            server = LocalMlflowServer(store).start()
            uri = server.uri
        elif (reason := unreachable_reason(uri)) is not None:
            raise AggregateError(f"--tracking-uri {show(uri)}: {reason}")
        if not experiment_exists(uri, args.experiment):  # before the output folder is made
            raise AggregateError(f"no experiment {show(args.experiment)} at {uri}")
        out = make_dir(_out_dir(args, args.experiment), "--out" if args.out else "--storage")
        return aggregate(uri, args.experiment, out, tables, args.sweep_id)
    except TrackingUnavailable as err:
        raise AggregateError(str(err).splitlines()[0]) from None
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
