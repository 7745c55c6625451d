"""Property-based: malformed and adversarial input never crashes either CLI, and a refusal leaves no trace.

The first three tests feed random documents, overrides and bytes to a dry run: exit code 0 (it happened to be
valid) or 2, never a traceback, nothing started, nothing created. The rest generate one class of hostile input
each (alias bombs, depth, size, control characters, URIs, environment variables, seeds and fractions, unsafe
names, storage, grid size, flags) and call `main` in-process from an empty temporary working directory; every
case must exit 2 with exactly one printable line, leave the directory tree exactly as it was, leave no child
process and no bug report behind, never reach the run phase, and never contact a non-loopback address."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orchestrator.sweep import main

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["ours", "clip_vit_b16", "resnet34", "1e-3", "[]", "{}"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)
KEYS = [
    "name",
    "grid",
    "grid.student",
    "grid.teacher",
    "grid.method",
    "grid.data_fraction",
    "grid.seed",
    "grid.pairs",
    "eval",
    "train",
    "train.epochs",
    "train.lr",
    "train.dropout",
    "data.image_size",
    "data.source",
    "data.roots",
    "resources.workers_per_trial",
    "model_overrides",
    "weights",
    "search",
    "reproduces",
    "profiles",
    "profiles.local",
    "profiles.local.train",
    "pool.n_images",
    "nonsense.key",
]


def _set(doc: dict, dotted: str, value) -> dict:
    node = doc
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value
    return doc


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def _check(code: int, err: str, storage: Path) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        assert 0 < len(err.strip().splitlines()) <= 3 and len(err) < 2000, err
        assert len(err.splitlines()) == 1 and err.splitlines()[0].isprintable(), repr(err)  # one clean line
    assert not (storage / "mlflow").exists()
    assert not storage.exists()  # a dry run, valid or not, creates nothing (not even <storage>/cache)
    import ray

    assert not ray.is_initialized()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=values)
def test_adversarial_spec_documents(tmp_path: Path, key: str, value) -> None:
    doc = _set(yaml.safe_load(yaml.safe_dump(BASE)), key, value)
    spec = tmp_path / "adv.yaml"
    try:
        spec.write_text(yaml.safe_dump(doc, allow_unicode=True))
    except yaml.YAMLError:
        return
    storage = tmp_path / "runs"
    code, err = _run([str(spec), "--dry-run", "--storage", str(storage)])
    _check(code, err, storage)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(st.sampled_from(KEYS), st.text(max_size=15)), raw=st.text(max_size=20))
def test_adversarial_overrides(tmp_path: Path, key: str, raw: str) -> None:
    storage = tmp_path / "runs"
    code, err = _run(
        [str(ROOT / "sweeps" / "smoke.yaml"), "--dry-run", "--set", f"{key}={raw}", "--storage", str(storage)]
    )
    _check(code, err, storage)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=200))
def test_garbage_files(tmp_path: Path, blob: bytes) -> None:
    spec = tmp_path / "garbage.yaml"
    spec.write_bytes(blob)
    storage = tmp_path / "runs"
    code, err = _run([str(spec), "--dry-run", "--storage", str(storage)])
    _check(code, err, storage)


# ================================================================================ every class of hostile input

import ipaddress  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from unittest import mock  # noqa: E402

import pytest  # noqa: E402

from orchestrator import aggregate as aggregate_cli  # noqa: E402
from orchestrator import sweep as sweep_cli  # noqa: E402
from orchestrator.checks import ENV_RULES, MLFLOW_ENV  # noqa: E402
from orchestrator.inputs import MAX_LINE, MAX_SPEC_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, SAFE_PART, BadInput, load_yaml  # noqa: E402
from orchestrator.spec import MAX_CELLS, MIN_FRACTION, SEED_BOUND  # noqa: E402

SMOKE = str(ROOT / "sweeps" / "smoke.yaml")
SMOKE_TEXT = (ROOT / "sweeps" / "smoke.yaml").read_text()
FAST = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], database=None
)


# ------------------------------------------------------------------------------------------------ harness


def _is_loopback(host: object) -> bool:
    host = str(host).strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_real_getaddrinfo, _real_connect = socket.getaddrinfo, socket.socket.connect


def _getaddrinfo_loopback_only(host, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    assert host is None or _is_loopback(host), f"a check tried to resolve {host!r}"
    return _real_getaddrinfo(host, *args, **kwargs)


def _connect_loopback_only(self, address):  # noqa: ANN001, ANN202
    if self.family in (socket.AF_INET, socket.AF_INET6):
        assert _is_loopback(address[0]), f"a check tried to connect to {address!r}"
    return _real_connect(self, address)


def _children() -> set[int]:
    """PIDs of this process's children (every thread's), from /proc."""
    kids: set[int] = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        try:
            with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
                kids |= {int(x) for x in f.read().split()}
        except OSError:
            continue
    return kids


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            out[os.path.relpath(path, root)] = (st_.st_mode, st_.st_size, st_.st_mtime_ns)
    return out


def _bug_reports() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("robustify-error-")}


@contextlib.contextmanager
def _sandbox():
    """An empty working directory for one example (Hypothesis cannot reuse a function-scoped tmp_path)."""
    with tempfile.TemporaryDirectory(prefix="badinput-") as d, contextlib.chdir(d):
        yield Path(d)


def _closed_port() -> int:
    with socket.socket() as s_:
        s_.bind(("127.0.0.1", 0))
        return s_.getsockname()[1]


def _refused(argv: list[str], root: Path, env: dict[str, str] | None = None, cli=sweep_cli.main) -> str:
    """Run a CLI in-process on `argv`; assert the refusal contract; return the line (without `error: `)."""
    before, kids, bugs = _tree(root), _children(), _bug_reports()
    err = io.StringIO()
    with (
        mock.patch.dict(os.environ, env or {}),
        mock.patch.object(sweep_cli, "_run", side_effect=AssertionError("bad input reached the run phase")),
        mock.patch.object(socket, "getaddrinfo", _getaddrinfo_loopback_only),
        mock.patch.object(socket.socket, "connect", _connect_loopback_only),
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        code = cli(argv)
    text = err.getvalue()
    assert code == 2, (code, text)
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    line = text[:-1]
    assert line.startswith("error: ") and line.isprintable() and len(line) <= len("error: ") + MAX_LINE, repr(line)
    assert _tree(root) == before, "a refusal created or changed files"
    assert _children() <= kids, "a refusal left a process"
    assert _bug_reports() == bugs, "an internal error, not a refusal"
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    return line.removeprefix("error: ")


def _doc(**changes) -> str:
    doc = yaml.safe_load(SMOKE_TEXT)
    for dotted, value in changes.items():
        _set(doc, dotted.replace("__", "."), value)
    return yaml.safe_dump(doc, allow_unicode=True)


# A run (not a dry run) that is otherwise valid stops at the tracking check: no example can ever start a sweep.
def _down() -> list[str]:
    return ["--tracking-uri", f"http://127.0.0.1:{_closed_port()}"]


# ------------------------------------------------------------------------------------------------ 1. bounds


def _bomb(levels: int, width: int) -> tuple[str, int]:
    """`[&a0 [ours, ...], &a1 [*a0, ...], ...]` and its node count with every alias expanded."""
    parts, sizes = [f"&a0 [{', '.join(['ours'] * width)}]"], [1 + width]
    for i in range(1, levels):
        parts.append(f"&a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
        sizes.append(1 + width * sizes[-1])
    return "[" + ", ".join(parts) + "]", 1 + sum(sizes)


@settings(FAST, max_examples=60)
@given(levels=st.integers(2, 9), width=st.integers(2, 12), where=st.sampled_from(["profiles", "grid", "--set"]))
def test_alias_bombs_are_refused_before_they_expand(levels: int, width: int, where: str) -> None:
    value, expanded = _bomb(levels, width)
    with _sandbox() as root:
        spec = root / "bomb.yaml"
        if where == "profiles":
            spec.write_text(SMOKE_TEXT.replace("  local:\n", f"  local:\n    bomb: {value}\n"))
        elif where == "grid":
            spec.write_text(SMOKE_TEXT.replace("  method: [ours, apt]", f"  method: {value}"))
        else:
            spec.write_text(SMOKE_TEXT)
        argv = [str(spec), "--dry-run"] + (["--set", f"grid.method={value}"] if where == "--set" else [])
        line = _refused(argv, root)
    if expanded > MAX_YAML_NODES:
        assert f"more than {MAX_YAML_NODES:,} values once aliases are expanded" in line, line


@settings(FAST, max_examples=15)
@given(
    depth=st.integers(MAX_YAML_DEPTH + 1, 150_000),
    opener=st.sampled_from(["[", "{a: ", "- "]),
    closed=st.booleans(),
    via=st.sampled_from(["file", "--set"]),
)
def test_deep_nesting_is_refused_without_recursion(depth: int, opener: str, closed: bool, via: str) -> None:
    closer = {"[": "]", "{a: ": "}", "- ": ""}[opener]
    value = opener * depth + "x" + (closer * depth if closed else "")
    with _sandbox() as root:
        spec = root / "deep.yaml"
        sep = "\n" if opener == "- " else " "  # a block sequence starts on its own line
        spec.write_text(f"name:{sep}{value}\n" if via == "file" else SMOKE_TEXT)
        argv = [str(spec), "--dry-run"] + (["--set", f"name={value}"] if via == "--set" else [])
        line = _refused(argv, root)
    too_big = len(value) + 7 > MAX_SPEC_BYTES
    assert ("KiB" in line) if too_big else (f"nested deeper than {MAX_YAML_DEPTH} levels" in line), line


@settings(FAST, max_examples=8)
@given(
    size=st.integers(MAX_SPEC_BYTES + 1, 4 * MAX_SPEC_BYTES),
    fill=st.sampled_from(["comment", "string", "keys"]),
    via=st.sampled_from(["file", "--set"]),
)
def test_oversize_input_is_refused_with_a_bounded_read(size: int, fill: str, via: str) -> None:
    pad = {"comment": "#" * size, "string": "x" * size, "keys": "".join(f"k{i}: {i}\n" for i in range(size // 8 + 1))}[
        fill
    ]
    with _sandbox() as root:
        spec = root / "big.yaml"
        if via == "file":
            spec.write_text(SMOKE_TEXT + "\n" + ("description: " if fill == "string" else "") + pad + "\n")
            argv = [str(spec), "--dry-run"]
        else:
            spec.write_text(SMOKE_TEXT)
            argv = [str(spec), "--dry-run", "--set", f"description={pad}"]
        line = _refused(argv, root)
    assert "256 KiB" in line, line


@settings(FAST, max_examples=6)
@given(seeds=st.integers(2_000, 6_000), fractions=st.integers(4, 9), via=st.sampled_from(["file", "--set"]))
def test_grid_size_is_refused_from_the_axis_lengths(seeds: int, fractions: int, via: str) -> None:
    """smoke's methods (ours, apt) x fractions x seeds cells, refused above the limit before any is expanded."""
    from trainables.vocab import METHODS_WITHOUT_FRACTION, Method

    n = seeds * sum(1 if Method(m) in METHODS_WITHOUT_FRACTION else fractions for m in ("ours", "apt"))
    grid = {
        "grid__seed": list(range(seeds)),
        "grid__data_fraction": [round(0.1 * (i + 1), 2) for i in range(fractions)],
    }
    with _sandbox() as root:
        spec = root / "huge.yaml"
        if via == "file":
            spec.write_text(_doc(**grid))
            argv = [str(spec), "--dry-run"]
        else:
            spec.write_text(SMOKE_TEXT)
            argv = [
                str(spec),
                "--dry-run",
                "--set",
                f"grid.seed={grid['grid__seed']}",
                "--set",
                f"grid.data_fraction={grid['grid__data_fraction']}",
            ]
        line = _refused(argv, root)
    assert n > MAX_CELLS
    assert f"the grid has {n:,} cells" in line and f"the limit is {MAX_CELLS:,}" in line, line


# ------------------------------------------------------------------------------------------------ 2. messages

CONTROL = st.characters(categories=["Cc", "Cf", "Zl", "Zp"], exclude_characters="\x00")
_PLAIN = st.text(st.characters(codec="utf-8", exclude_characters="\x00/"), max_size=6)
NASTY = st.builds(lambda a, c, b: a + c + b, _PLAIN, CONTROL, _PLAIN)  # at least one control character


@settings(FAST, max_examples=200)
@given(
    nasty=NASTY,
    where=st.sampled_from(
        [
            "key",
            "name",
            "file",
            "--profile",
            "--set-key",
            "--set-value",
            "--storage",
            "--tracking-uri",
            "--address",
            "--experiment",
            "--table",
        ]
    ),
)
def test_control_characters_are_escaped_in_the_one_line(nasty: str, where: str) -> None:
    with _sandbox() as root:
        spec = root / "s.yaml"
        spec.write_text(SMOKE_TEXT)
        argv, cli = [str(spec), "--dry-run"], sweep_cli.main
        if where == "key":
            spec.write_text(_doc(**{f"grid__{nasty}": 1}))
        elif where == "name":
            spec.write_text(_doc(name=nasty))
        elif where == "file":
            odd = root / (nasty.replace("\x00", "") or "x")
            assume(odd.name not in ("", ".", ".."))
            odd.write_text("name: [\n")
            argv = [str(odd), "--dry-run"]
        elif where == "--profile":
            argv += [f"--profile={nasty}"]
        elif where == "--set-key":
            argv += ["--set", f"{nasty}=1"]
        elif where == "--set-value":
            argv += ["--set", f"name={nasty}"]
        elif where == "--storage":
            argv += [f"--storage=x{nasty}://bucket"]
        elif where == "--tracking-uri":
            argv = [str(spec), f"--tracking-uri=http://127.0.0.1:{_closed_port()}/{nasty}"]
        elif where == "--address":
            argv = [str(spec), *_down(), f"--address=127.0.0.1:1{nasty}"]
        elif where == "--experiment":
            argv, cli = [f"--experiment={nasty}"], aggregate_cli.main
        else:
            argv, cli = ["--experiment=x", f"--table={nasty}"], aggregate_cli.main
        line = _refused(argv, root, cli=cli)
    assert not any(c in line for c in nasty if not c.isprintable()), repr(line)


@settings(FAST, max_examples=6)
@given(n=st.integers(20_000, 30_000), dup=st.integers(0, 19_999))
def test_a_huge_duplicate_is_shortened(n: int, dup: int) -> None:
    with _sandbox() as root:
        spec = root / "s.yaml"
        spec.write_text(SMOKE_TEXT)
        line = _refused([str(spec), "--dry-run", "--set", f"grid.seed=[{', '.join(map(str, range(n)))}, {dup}]"], root)
    assert f"grid.seed lists {dup} twice" in line and len(line) < 400, line


# ------------------------------------------------------------------------------------------------ 3. types, names

BAD_SEEDS = st.one_of(
    st.booleans(),
    st.text(max_size=6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(max_value=-1),
    st.integers(min_value=SEED_BOUND, max_value=2**80),
)
BAD_FRACTIONS = st.one_of(
    st.booleans(),
    st.text(max_size=6),
    st.integers().filter(lambda i: i != 1),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not MIN_FRACTION <= x <= 1.0),
    st.floats(min_value=1e-320, max_value=MIN_FRACTION, exclude_max=True),
)


def _bad_seed(v: object) -> bool:
    return type(v) is not int or not 0 <= v < SEED_BOUND


def _bad_fraction(v: object) -> bool:
    return isinstance(v, bool) or not isinstance(v, (int, float)) or not MIN_FRACTION <= v <= 1.0


@settings(FAST, max_examples=120)
@given(
    axis=st.sampled_from(["seed", "data_fraction"]),
    data=st.data(),
    pos=st.integers(0, 2),
    via=st.sampled_from(["file", "--set"]),
)
def test_bools_strings_and_odd_floats_are_not_seeds_or_fractions(axis: str, data, pos: int, via: str) -> None:
    bad = data.draw(BAD_SEEDS if axis == "seed" else BAD_FRACTIONS)
    good = [0, 1] if axis == "seed" else [0.5, 1.0]
    values = good[:pos] + [bad] + good[pos:]
    dumped = yaml.safe_dump(values, default_flow_style=True, allow_unicode=True).strip()
    try:  # judge what *we* read (YAML 1.2 floats: an unquoted 1e-3 written by PyYAML is a number to us)
        read = load_yaml(dumped)
    except (BadInput, yaml.YAMLError):
        read = None
    assume(isinstance(read, list) and len(read) == 3 and (_bad_seed if axis == "seed" else _bad_fraction)(read[pos]))
    assume(len({str(v) for v in read}) == 3)
    with _sandbox() as root:
        spec = root / "s.yaml"
        spec.write_text(_doc(**{f"grid__{axis}": values}) if via == "file" else SMOKE_TEXT)
        argv = [str(spec), "--dry-run"] + (["--set", f"grid.{axis}={dumped}"] if via == "--set" else [])
        line = _refused(argv, root)
    assert f"grid.{axis}" in line, line


UNSAFE = st.one_of(
    st.sampled_from(
        [
            ".",
            "..",
            "../evil",
            "../../evil",
            "a/b",
            "/abs",
            "-x",
            "_x",
            ".hidden",
            "a" * 101,
            "",
            " x",
            "x ",
            "a\\b",
            "a:b",
        ]
    ),
    st.text(max_size=110).filter(lambda t: not SAFE_PART.fullmatch(t)),
)


@settings(FAST, max_examples=100)
@given(name=UNSAFE, where=st.sampled_from(["file", "--set", "--experiment"]))
def test_names_that_become_paths_are_single_safe_parts(name: str, where: str) -> None:
    assume("\x00" not in name and not any(0xD800 <= ord(c) <= 0xDFFF for c in name))
    if where == "--set":  # judge what the YAML value reads as (`name= x` is the safe name 'x')
        try:
            read = load_yaml(name) if name.strip() else ""
        except (BadInput, yaml.YAMLError):
            read = None
        assume(not (isinstance(read, str) and SAFE_PART.fullmatch(read)))
    with _sandbox() as root:
        spec = root / "s.yaml"
        spec.write_text(_doc(name=name) if where == "file" else SMOKE_TEXT)
        if where == "--experiment":
            line = _refused([f"--experiment={name}", *_down()], root, cli=aggregate_cli.main)
            assert "--experiment" in line, line
            return
        argv = [str(spec), "--dry-run"] + (["--set", f"name={name}"] if where == "--set" else [])
        line = _refused(argv, root)
    assert "name" in line, line


# ------------------------------------------------------------------------------------------------ 4. flags, env

SCHEMES = [
    "http",
    "https",
    "HTTP",
    "ftp",
    "garbage",
    "",
    "file",
    "sqlite",
    "postgresql",
    "mysql+pymysql",
    "mssql",
    "s3",
    "ray",
    "http+unix",
]
HOSTS = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    "[::1",
    "::1]",
    "",
    "a..b",
    "-x",
    "bad_host..",
    "%41",
    "127.0.0.1 ",
    "user:pw@127.0.0.1",
    "[fe80::1%eth0",
    "999.1.1.1.1",
]
PORTS = st.one_of(st.sampled_from(["abc", "0", "70000", "-1", "", "99999999999", "1e3", " 1"]), st.just("CLOSED"))
PATHS = ["", "/", "/x", "?q=1", "#f", "/a b", "/api//"]


def _uri(scheme: str, host: str, port: str, path: str) -> str:
    port = str(_closed_port()) if port == "CLOSED" else port
    return f"{scheme + '://' if scheme else ''}{host}:{port}{path}"


@settings(FAST, max_examples=150)
@given(
    scheme=st.sampled_from(SCHEMES),
    host=st.sampled_from(HOSTS),
    port=PORTS,
    path=st.sampled_from(PATHS),
    cli=st.sampled_from(["sweep", "aggregate"]),
)
def test_tracking_uris_malformed_or_unreachable(scheme: str, host: str, port: str, path: str, cli: str) -> None:
    uri = _uri(scheme, host, port, path)
    with _sandbox() as root:
        if cli == "sweep":
            line = _refused([SMOKE, f"--tracking-uri={uri}"], root)
        else:
            line = _refused(["--experiment=x", f"--tracking-uri={uri}"], root, cli=aggregate_cli.main)
    assert "--tracking-uri" in line and "secret" not in line, line


ADDRESSES = st.one_of(
    st.sampled_from(
        [
            "",
            "nonsense",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:abc",
            "127.0.0.1:70000",
            "http://127.0.0.1:6379",
            "ray://",
            "ray://127.0.0.1",
            "[::1",
            "a..b:6379",
            "127.0.0.1:6379/x",
            "u@127.0.0.1:6379",
        ]
    ),
    st.builds(
        lambda p, ray_: f"{'ray://' if ray_ else ''}127.0.0.1:{p}",
        st.just(0).map(lambda _: _closed_port()),
        st.booleans(),
    ),
    st.text(max_size=20),
)


@settings(FAST, max_examples=100)
@given(address=ADDRESSES, tracking=st.sampled_from(["none", "down"]))
def test_ray_addresses_malformed_or_unreachable(address: str, tracking: str) -> None:
    assume(address != "auto" and "\x00" not in address)
    with _sandbox() as root:
        argv = [SMOKE, f"--address={address}"] + (_down() if tracking == "down" else [])
        line = _refused(argv, root, env={"RAY_ADDRESS": ""})
    assert "--address" in line or "--tracking-uri" in line, line


def _env_rejects(name: str, raw: str) -> bool:
    try:
        ENV_RULES[name].check(name, raw)
        return False
    except BadInput:
        return True


ENV_VALUES = st.one_of(
    st.sampled_from(
        [
            "garbage",
            "",
            " ",
            "nan",
            "inf",
            "-inf",
            "-1",
            "1e999",
            "1.5",
            "0",
            "99999999999999999999999",
            "1e3",
            "0x10",
            "yes",
            "TRUE",
            "2",
            "11",
        ]
    ),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10),
)


@settings(FAST, max_examples=150)
@given(name=st.sampled_from(sorted(ENV_RULES)), raw=ENV_VALUES, cli=st.sampled_from(["sweep", "aggregate"]))
def test_environment_variables_are_parsed_up_front(name: str, raw: str, cli: str) -> None:
    assume(not any(0xD800 <= ord(c) <= 0xDFFF for c in raw))
    assume(cli == "sweep" or name in MLFLOW_ENV)
    with _sandbox() as root:
        if cli == "sweep":
            line = _refused([SMOKE, *_down()], root, env={name: raw})
        else:
            line = _refused(["--experiment=x", *_down()], root, env={name: raw}, cli=aggregate_cli.main)
    assert (name in line) if _env_rejects(name, raw) else ("no MLflow server answers" in line), line


@settings(FAST, max_examples=30)
@given(
    flag=st.sampled_from(["--mlflow-patience", "--num-cpus"]),
    value=st.sampled_from(["nan", "inf", "-inf", "0", "-1", "1e300", "abc", "", "5000", "1.5", "0x2"]),
)
def test_numeric_flags(flag: str, value: str) -> None:
    assume((flag, value) not in {("--mlflow-patience", "1.5"), ("--mlflow-patience", "5000")})  # valid ones
    with _sandbox() as root:
        line = _refused([SMOKE, f"{flag}={value}", *_down()], root)
    assert flag in line, line


# ------------------------------------------------------------------------------------------------ 5. storage


STORAGES = [
    "/dev/null",
    "{root}/file",
    "{root}/file/sub",
    "garbage://x/y",
    "s3://",
    "s3:///x",
    "file://relative",
    "",
    " runs",
    "ftp://h/x",
    "a" * 5000,
    "{root}/" + "b" * 300 + "/c",
    "gs://-bad bucket/x",
    "x\x00y",
]


@settings(FAST, max_examples=40)
@given(storage=st.sampled_from(STORAGES), dry_run=st.booleans())
def test_storage_is_judged_without_creating_it(storage: str, dry_run: bool) -> None:
    with _sandbox() as root:
        (root / "file").write_text("not a folder")
        storage = storage.replace("{root}", str(root))
        argv = [SMOKE, f"--storage={storage}"] + (["--dry-run"] if dry_run else _down())
        line = _refused(argv, root)
    assert "--storage" in line, line


@settings(FAST, max_examples=10)
@given(where=st.sampled_from(["new", "existing", "nested"]), via=st.sampled_from(["s3", "full"]))
def test_real_runs_refuse_unreachable_object_stores_and_full_disks(where: str, via: str) -> None:
    with _sandbox() as root:
        (root / "existing").mkdir()
        storage = (
            "s3://bucket/prefix"
            if via == "s3"
            else str(root / {"new": "r", "existing": "existing", "nested": "a/b/c"}[where])
        )
        # an object store that does not answer (a closed port: refused at once, pyarrow retries for a few seconds)
        env = {"ROBUSTIFY_MIN_FREE_MIB": str(2**40), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
        line = _refused([SMOKE, f"--storage={storage}"], root, env=env)
    assert ("the object store does not answer" in line) if via == "s3" else ("MiB free" in line), line


@settings(FAST, max_examples=20)
@given(
    out=st.sampled_from(["{root}/file", "{root}/file/sub", "/dev/null", "s3://b/x", "{root}/" + "o" * 300, "x\x00y"]),
    which=st.sampled_from(["--out", "--storage"]),
)
def test_aggregate_output_folders(out: str, which: str) -> None:
    with _sandbox() as root:
        (root / "file").write_text("not a folder")
        value = out.replace("{root}", str(root))
        line = _refused(["--experiment=x", f"{which}={value}", *_down()], root, cli=aggregate_cli.main)
    assert which in line, line


# ------------------------------------------------------------------------------------------------ 6. a live store


class _FakeMlflow(BaseHTTPRequestHandler):
    """Answers the read-only requests a check may make; records every request (anything else is a write)."""

    seen: list[tuple[str, str]] = []

    def log_message(self, *args) -> None:  # noqa: ANN002 - quiet
        pass

    def _reply(self, code: int, body: dict | str) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(("GET", self.path))
        if self.path == "/health":
            self._reply(200, "OK")
        elif self.path.startswith("/api/2.0/mlflow/experiments/search"):
            self._reply(200, {"experiments": []})
        else:
            self._reply(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "not here"})

    def do_POST(self) -> None:  # noqa: N802
        self.seen.append(("POST", self.path))
        self._reply(500, {"error_code": "INTERNAL_ERROR", "message": "a check must not write"})


@pytest.fixture()
def fake_mlflow():
    _FakeMlflow.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeMlflow)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--address", "127.0.0.1:{port}"], "--address"),
        (["--address", "not an address"], "--address"),
        (["--mlflow-patience", "nan"], "--mlflow-patience"),
        (["--storage", "/dev/null"], "--storage"),
        (["--set", "profile=paper"], "--profile"),
        (["--profile", "paper"], "data.roots"),
    ],
)
def test_a_refusal_leaves_the_tracking_store_as_it_was(fake_mlflow: str, extra: list[str], needle: str) -> None:
    """With a live (fake) server: only the read-only /health and search requests, or none; no run, no ./mlruns."""
    port = str(_closed_port())
    with _sandbox() as root:
        line = _refused([SMOKE, "--tracking-uri", fake_mlflow, *[a.replace("{port}", port) for a in extra]], root)
    assert needle in line, line
    assert all(
        m == "GET" and (p == "/health" or p.startswith("/api/2.0/mlflow/experiments/search"))
        for m, p in _FakeMlflow.seen
    ), _FakeMlflow.seen


def test_aggregate_makes_no_output_folder_for_a_missing_experiment(fake_mlflow: str) -> None:
    with _sandbox() as root:
        line = _refused(
            ["--experiment", "nope", "--tracking-uri", fake_mlflow, "--out", str(root / "o")],
            root,
            cli=aggregate_cli.main,
        )
    assert "no experiment 'nope'" in line, line
    assert all(m == "GET" for m, _ in _FakeMlflow.seen), _FakeMlflow.seen


def test_a_web_server_that_is_not_mlflow_is_refused(fake_mlflow: str) -> None:
    with (
        _sandbox() as root,
        mock.patch.object(
            _FakeMlflow,
            "do_GET",
            lambda self: (  # /health only
                self.seen.append(("GET", self.path)),
                self._reply(200 if self.path == "/health" else 404, "no"),
            ),
        ),
    ):
        line = _refused([SMOKE, "--tracking-uri", fake_mlflow], root)
    assert "not an MLflow tracking server" in line, line


@pytest.mark.parametrize(
    "name, raw", [("ROBUSTIFY_MIN_FREE_MIB", "garbage"), ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "garbage")]
)
def test_the_issues_environment_examples(name: str, raw: str) -> None:
    with _sandbox() as root:
        line = _refused([SMOKE, *_down()], root, env={name: raw})
    assert line.startswith(f"environment variable {name}='garbage' is not a whole number"), line


def test_a_validation_bug_is_one_line_and_a_traceback_file(capsys) -> None:
    """Not bad input but a bug: exit 1, one line naming the traceback file, nothing in the working directory."""
    with _sandbox() as root, mock.patch.object(sweep_cli, "check_data_roots", side_effect=KeyError("boom")):
        assert sweep_cli.main([SMOKE, "--dry-run"]) == 1
        assert not any(root.iterdir())
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "KeyError: 'boom'" in err and "Traceback" not in err, err
    report = Path(err.rsplit("traceback: ", 1)[1].rstrip(")\n"))
    assert "Traceback" in report.read_text()
    report.unlink()


def test_a_million_cell_grid_is_refused_in_seconds() -> None:
    """The issue's 10^6-cell dry run (past 60 s and 1.7 GB before): 2 methods x 500 fractions x 1,000 seeds."""
    import time

    fractions = ", ".join(f"{(i + 1) / 500:.4f}" for i in range(500))
    with _sandbox() as root:
        t0 = time.perf_counter()
        line = _refused(
            [
                SMOKE,
                "--dry-run",
                "--set",
                f"grid.seed=[{', '.join(map(str, range(1000)))}]",
                "--set",
                f"grid.data_fraction=[{fractions}]",
            ],
            root,
        )
        assert time.perf_counter() - t0 < 10
    assert "the grid has 1,000,000 cells" in line, line


def test_a_dry_run_on_an_object_store_stays_offline() -> None:
    """s3:// storage in a dry run: planned without the cache, no network (the guards would fail the test), no
    local mirror (~/.cache/robustify), nothing in the working directory."""
    mirror = Path.home() / ".cache" / "robustify"
    had_mirror = sorted(mirror.iterdir()) if mirror.exists() else None
    with (
        _sandbox() as root,
        mock.patch.object(socket, "getaddrinfo", _getaddrinfo_loopback_only),
        mock.patch.object(socket.socket, "connect", _connect_loopback_only),
        contextlib.redirect_stdout(io.StringIO()) as out,
    ):
        assert sweep_cli.main([SMOKE, "--dry-run", "--storage", "s3://bucket/prefix"]) == 0
        assert not any(root.iterdir())
    assert "2 cells" in out.getvalue()
    assert (sorted(mirror.iterdir()) if mirror.exists() else None) == had_mirror


@settings(FAST, max_examples=30)
@given(
    root_value=st.one_of(
        st.sampled_from(["a\x00b", "a" * 5000, "/dev/null/x", "", "~nobody/x"]),
        st.text(st.characters(codec="utf-8"), max_size=300),
    ),
    key=st.sampled_from(["imagenet", "imagenet_c", "objectnet_mapping"]),
)
def test_data_roots_that_are_not_usable_paths(root_value: str, key: str) -> None:
    """The paper profile checks its data roots before anything starts; odd paths are refused, not crashed on."""
    with _sandbox() as root:
        spec = root / "s.yaml"
        spec.write_text(_doc(**{f"profiles__paper__data__roots__{key}": root_value}, eval=["clean", "objectnet"]))
        line = _refused([str(spec), "--profile", "paper", "--dry-run"], root)
    assert "data.roots" in line, line


def test_a_closed_stdout_is_not_a_bug() -> None:
    """`--dry-run | head`: the reader went away; exit 141 quietly, no traceback file."""

    class Closed(io.StringIO):
        def write(self, _text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    bugs, err = _bug_reports(), io.StringIO()
    with _sandbox(), contextlib.redirect_stdout(Closed()), contextlib.redirect_stderr(err):
        assert sweep_cli.main([SMOKE, "--dry-run"]) == sweep_cli.EXIT_BROKEN_PIPE
    assert err.getvalue() == "" and _bug_reports() == bugs
