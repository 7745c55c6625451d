"""`python -m orchestrator.aggregate`: MLflow runs -> the paper's tables and figures beside the paper's numbers.

    python -m orchestrator.aggregate --experiment NAME [--tracking-uri URI] [--out DIR] [--table ID]
                                     [--sweep-id ID]
    python -m orchestrator.aggregate --table supp_table5 --profile paper --out DIR   # no MLflow: architectures

Without --tracking-uri it opens the local store `./runs/mlflow` (starting an MLflow server on 127.0.0.1 for the
duration). Outputs per table: <id>.md, .csv, .tex (and .png for figures), plus index.md.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import pandas as pd

from orchestrator import render
from orchestrator.tables import TABLE_IDS, TABLES, build_table


def write_table(res, out: Path) -> list[Path]:
    files = {f"{res.spec.id}.md": render.to_markdown(res), f"{res.spec.id}.csv": render.to_csv(res),
             f"{res.spec.id}.tex": render.to_latex(res)}
    paths = []
    for name, text in files.items():
        (out / name).write_text(text)
        paths.append(out / name)
    if res.spec.kind == "figure":
        (out / f"{res.spec.id}.png").write_bytes(render.to_png(res))
        paths.append(out / f"{res.spec.id}.png")
    return paths


def aggregate_frame(runs: pd.DataFrame, out_dir: str | Path, tables: list[str] | None = None) -> list[Path]:
    """Render the chosen tables (default: every table with data) from a run DataFrame; always writes index.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = tables or [t for t in TABLE_IDS if _has_data(TABLES[t], runs)]
    written: list[Path] = []
    entries = []
    for tid in ids:
        res = build_table(TABLES[tid], runs)
        files = write_table(res, out)
        written += files
        entries.append((tid, res.spec.title, [f.name for f in files]))
    (out / "index.md").write_text(render.index_markdown(entries))
    return written + [out / "index.md"]


def _has_data(spec, runs: pd.DataFrame) -> bool:
    res = build_table(spec, runs)
    return bool(res.n.to_numpy().sum() > 0)


def aggregate(uri: str, experiment: str, out_dir: str | Path, tables: list[str] | None = None,
              sweep_id: str | None = None) -> list[Path]:
    """Read the experiment's runs (optionally one sweep id) and render the tables."""
    from orchestrator.tracking import runs_dataframe

    runs = runs_dataframe(uri, experiment)
    if sweep_id and not runs.empty and "tags.sweep_id" in runs:
        runs = runs[runs["tags.sweep_id"] == sweep_id]
    return aggregate_frame(runs, out_dir, tables)


def supp_table5_paper(out_dir: str | Path) -> Path:
    """Table 5 from the real architectures at paper settings (random init, nothing downloaded)."""
    from trainables.models import supp_table5_rows

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(supp_table5_rows(), columns=["student", "params_tuned", "params_total"])
    path = out / "supp_table5.csv"
    df.to_csv(path, index=False, lineterminator="\n")
    return path


class _BadInput(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise _BadInput(f"{self.prog}: {message}")


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="python -m orchestrator.aggregate", description=__doc__.split("\n")[0])
    p.add_argument("--experiment")
    p.add_argument("--tracking-uri")
    p.add_argument("--out", default=None)
    p.add_argument("--table", action="append", dest="tables")
    p.add_argument("--sweep-id")
    p.add_argument("--profile", choices=["local", "paper"])
    p.add_argument("--storage", default="./runs", help="where the local MLflow store lives (without --tracking-uri)")
    try:
        args = p.parse_args(argv)
        for t in args.tables or []:
            if t not in TABLE_IDS:
                close = difflib.get_close_matches(t, TABLE_IDS, n=3)
                hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
                raise _BadInput(f"--table {t!r} is not a known table{hint}; allowed: {', '.join(TABLE_IDS)}")
        if args.profile == "paper" and args.tables == ["supp_table5"]:
            print(supp_table5_paper(args.out or "."))
            return 0
        if not args.experiment:
            raise _BadInput("--experiment NAME is required (the sweep's name)")
        return _from_mlflow(args)
    except _BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _from_mlflow(args) -> int:
    from orchestrator.tracking import LocalMlflowServer, TrackingUnavailable, experiment_exists, wait_healthy

    server = None
    try:
        uri = args.tracking_uri
        if not uri:
            store = Path(args.storage) / "mlflow"
            if not (store / "mlflow.db").is_file():
                raise _BadInput(f"no local MLflow store at {store}; pass --tracking-uri or --storage")
            server = LocalMlflowServer(store).start()
            uri = server.uri
        elif uri.startswith("http") and not wait_healthy(uri, timeout_s=10):
            raise _BadInput(f"--tracking-uri {uri}: no MLflow server answers there")
        if not experiment_exists(uri, args.experiment):
            raise _BadInput(f"--experiment {args.experiment!r}: no such experiment at {uri}")
        out = args.out or str(Path(args.storage) / "results" / args.experiment)
        for f in aggregate(uri, args.experiment, out, args.tables, args.sweep_id):
            print(f)
        return 0
    except _BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrackingUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
