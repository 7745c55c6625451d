"""`robustify`: the console entry point (pyproject `[project.scripts]`), one command with three verbs.

    robustify sweep SPEC [SPEC ...] [flags]   = python -m orchestrator.sweep ...
    robustify aggregate [flags]               = python -m orchestrator.aggregate ...
    robustify ui [--storage DIR] [--port P]   the MLflow UI of a finished local store, on 127.0.0.1

Why thin: the verbs' parsers, checks and exit codes live with their modules (the `python -m` forms keep working
and say the same things); this module only dispatches, and owns `ui`, which had no module: browsing a store used
to take a five-line `mlflow server` command. Each verb's module is imported only when it is chosen, so `robustify
ui` starts without loading torch or Ray.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path

from orchestrator.inputs import BadInput, one_line, show
from orchestrator.mlflow_server import UI_PORT

EXIT_BAD_INPUT = 2
VERBS = {
    "sweep": "run sweep files (python -m orchestrator.sweep)",
    "aggregate": "render the paper's tables from MLflow (python -m orchestrator.aggregate)",
    "ui": "serve a finished local store's MLflow UI on 127.0.0.1",
}
USAGE = "usage: robustify {sweep,aggregate,ui} ...\n\n" + "\n".join(f"  {v:<10} {h}" for v, h in VERBS.items())


def main(argv: list[str] | None = None) -> int:
    """Dispatch `robustify VERB ...`; returns the exit code (2 with one line for an unknown verb)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verb, rest = (argv[0], argv[1:]) if argv else (None, [])
    if verb in (None, "-h", "--help"):
        print(USAGE + "\n\n`robustify VERB --help` lists every flag of a verb with its default.")
        return 0 if verb else EXIT_BAD_INPUT
    if verb == "sweep":
        from orchestrator import sweep

        return sweep.main(rest, prog="robustify sweep")
    if verb == "aggregate":
        from orchestrator import aggregate

        return aggregate.main(rest)
    if verb == "ui":
        return ui(rest)
    print(f"error: robustify: unknown command {show(verb)}; allowed: {', '.join(VERBS)}", file=sys.stderr)
    return EXIT_BAD_INPUT


# ------------------------------------------------------------------------------------------------ ui


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage dump -> our one line, exit 2
        raise BadInput(f"{self.prog}: {message}")


def ui_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="robustify ui",
        description="Serve the MLflow UI of a local store (<storage>/mlflow, written by `robustify sweep`) on "
        "127.0.0.1 until Ctrl-C.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--storage", default="./runs", help="the sweep's storage folder; its store is <storage>/mlflow")
    p.add_argument("--port", type=int, default=UI_PORT, help="port on 127.0.0.1; 0 picks a free one")
    return p


def check_ui(args: argparse.Namespace) -> Path:
    """The store exists and the port is free: said in one line before anything starts. Returns the store."""
    if not 0 <= args.port <= 65535:
        raise BadInput(f"--port {args.port}: allowed: 0 to 65535 (0: any free port)")
    store = Path(args.storage).expanduser() / "mlflow"
    try:
        found = (store / "mlflow.db").is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        found = False
    if not found:
        raise BadInput(
            f"--storage {show(args.storage)}: no MLflow store at {show(str(store))} (run `robustify sweep ... "
            f"--storage {args.storage}` first, or point --storage at a sweep's storage folder)"
        )
    if args.port and not _port_free(args.port):
        raise BadInput(f"--port {args.port}: something already listens on 127.0.0.1:{args.port}; pick another")
    return store


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ui(argv: list[str]) -> int:
    """`robustify ui`: start our `LocalMlflowServer` over the store, print its URL, stop it (by PID) on Ctrl-C."""
    from orchestrator.mlflow_server import LocalMlflowServer, TrackingUnavailable

    try:
        args = ui_parser().parse_args(argv)
        store = check_ui(args)
    except BadInput as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as done:  # --help
        return int(done.code or 0)
    server = LocalMlflowServer(store, port=args.port)
    # `kill PID` or a closed terminal: stop as Ctrl-C does. Python's default for both exits at once, skipping the
    # `finally`, and the MLflow server (and its uvicorn) would outlive us, holding the port
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    try:
        server.start()
        print(f"MLflow UI: {server.uri}  (store {store.resolve()}; Ctrl-C stops it)", flush=True)
        code = server.proc.wait()
        print(f"error: the MLflow server stopped on its own (exit {code}); see {store / 'server.log'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except TrackingUnavailable as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
