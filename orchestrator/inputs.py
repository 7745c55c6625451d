"""Bounded reading of user input, and the one-line form of every value a message echoes.

Why bounds: a sweep file is a few KB of values, but YAML can say a lot in little space. An alias bomb
(`a: &a [x, x]`, `b: &b [*a, *a]`, ... nine levels) is 1 KB on disk and 10^9 nodes once anything walks it
(validation, `repr`, a deep copy); 100,000 nested `[` blow Python's stack. So the loader refuses, *while it
composes* (before any recursion can run away), everything past the limits below, and it refuses duplicate keys
(YAML would silently keep the last). The same loader reads `--set` values.

Why `show`: a key, a value or a file name typed by a person can hold a newline, an ANSI escape or 700 KB; a
message must stay one line on a terminal, so every echoed value passes through `show` (repr-style escapes,
shortened with an ellipsis) and every final message through `one_line`.
"""

from __future__ import annotations

import os
import re
import reprlib
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import yaml

# Limits (documented in README.md, "The CLI"). The largest shipped sweep file is ~2 KB and ~150 YAML nodes.
MAX_SPEC_BYTES = 256 * 1024  # a sweep file, and each `--set` value
MAX_YAML_NODES = 100_000  # scalars + lists + mappings, counting an alias's target each time it is used
MAX_YAML_DEPTH = 32  # nesting, through aliases too
MAX_SHOWN = 80  # characters of a value echoed in a message
MAX_LINE = 1000  # characters of a whole message

SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SAFE_PART_RULE = "1-100 characters from [A-Za-z0-9._-], starting with a letter or digit"


class BadInput(ValueError):
    """Bad user input; the message is one line meant for a person (the CLIs print it with exit code 2)."""


class YamlTooBig(BadInput):
    """A YAML document over a bound (nodes, depth, bytes), or with a recursive alias."""


class DuplicateKey(BadInput):
    """A mapping names the same key twice."""


# ------------------------------------------------------------------------------------------------ messages


def escape(text: str) -> str:
    """Control, format and separator characters (newline, ESC, U+2028, a lone surrogate) as repr-style escapes."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii") for ch in text
    )


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 6, 6, 4, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = MAX_SHOWN, MAX_SHOWN, 40


def show(value: Any, limit: int = MAX_SHOWN) -> str:
    """A user value as it appears in a message: repr-style (strings quoted), one line, at most `limit` chars.

    Containers are summarised by `reprlib` (never a full `repr`: an alias-shared structure can be huge)."""
    if isinstance(value, str):
        text = escape(repr(value[:limit]))
        if len(value) <= limit and len(text) <= limit:
            return text
        return text[: max(limit - 2, 1)] + "…" + text[-1]  # keep the closing quote
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a message must never fail: fall back on the type
        text = f"<{type(value).__name__}>"
    return clip(escape(text), limit)


def show_path(path: str | Path, limit: int = 120) -> str:
    """A file name in a message: unquoted, escaped, shortened in the middle (the end names the file)."""
    text = escape(str(path))
    if len(text) <= limit:
        return text
    head = limit // 3
    return text[:head] + "…" + text[-(limit - head - 1) :]


def one_line(message: str, limit: int = MAX_LINE) -> str:
    """The final guard of every printed error: escaped, shortened, never more than one line."""
    return clip(escape(str(message)), limit)


def report_bug(err: BaseException) -> int:
    """An unexpected exception in a CLI (a bug, not the user's input): one line on stderr, the traceback in a
    temporary file (never in the working directory or the storage), exit code 1. Call inside `except`."""
    where = "not saved"
    try:
        fd, name = tempfile.mkstemp(prefix="robustify-error-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(traceback.format_exc())
        where = name
    except OSError:
        pass
    print(
        f"error: {one_line(f'{type(err).__name__}: {err}', 300)} (an internal error, not a problem with your "
        f"input; traceback: {where})",
        file=sys.stderr,
    )
    return 1


def check_part(value: Any, what: str) -> str:
    """A name that becomes one path component (sweep name, experiment, table id): `SAFE_PART`, not `.`/`..`.

    Raises:
        BadInput: naming `what`, the value and the rule.
    """
    if not isinstance(value, str) or not SAFE_PART.fullmatch(value):
        raise BadInput(f"{what} {show(value)} is not a safe folder name: use {SAFE_PART_RULE}")
    return value


# ------------------------------------------------------------------------------------------------ YAML


class BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` with bounds on depth and expanded size, no duplicate keys, and YAML 1.2 floats.

    Depth is checked in `compose_node` before descending, so a deep document fails at the 33rd level instead of
    at the interpreter's recursion limit. After composing, the node graph is measured as if every alias were
    expanded (memoised per node, so a bomb costs linear time to *refuse*); a recursive alias is refused too."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlTooBig(f"nested deeper than {MAX_YAML_DEPTH} levels at line {mark.line + 1}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):  # noqa: ANN201
        node = super().compose_document()
        _measure(node, {}, set(), 1)
        return node

    def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN201
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` then an explicit key is an override, not a duplicate
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # unhashable key: SafeConstructor raises its own error below
                if dup:
                    raise DuplicateKey(
                        f"duplicate key {show(key)} at line {key_node.start_mark.line + 1} "
                        "(YAML would keep only the last one; remove the other)"
                    )
        return super().construct_mapping(node, deep)


# YAML 1.1 (PyYAML) reads `1e-3` and `1e30` as strings; YAML 1.2 and people read them as numbers.
BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _measure(node: yaml.Node, memo: dict[int, int], stack: set[int], depth: int) -> int:
    """Expanded node count below `node` (aliases counted at every use); raises past the bounds."""
    if depth > MAX_YAML_DEPTH:
        raise YamlTooBig(
            f"nested deeper than {MAX_YAML_DEPTH} levels once aliases are expanded (line {node.start_mark.line + 1})"
        )
    key = id(node)
    if key in memo:
        return memo[key]
    if key in stack:
        raise YamlTooBig(f"recursive alias at line {node.start_mark.line + 1}")
    size = 1
    if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
        stack.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
        for child in children:
            size += _measure(child, memo, stack, depth + 1)
            if size > MAX_YAML_NODES:
                raise YamlTooBig(
                    f"more than {MAX_YAML_NODES:,} values once aliases are expanded "
                    f"(line {node.start_mark.line + 1}); an alias bomb?"
                )
        stack.discard(key)
    memo[key] = size
    return size


def load_yaml(text: str) -> Any:
    """Parse one YAML document with `BoundedLoader`.

    Raises:
        YamlTooBig, DuplicateKey: a bound or a duplicate key (one-line message, without the file name).
        yaml.YAMLError: malformed YAML.
    """
    if len(text) > MAX_SPEC_BYTES:
        raise YamlTooBig(f"{len(text):,} characters; the limit is {MAX_SPEC_BYTES // 1024} KiB")
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_bounded(path: Path, limit: int = MAX_SPEC_BYTES) -> str:
    """Read a regular UTF-8 text file of at most `limit` bytes (a bounded read: never the whole of a huge file).

    Raises:
        BadInput: not a regular file, too large, unreadable or not UTF-8 (messages without the file name).
    """
    try:
        exists, regular = path.exists(), path.is_file()
        if regular:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as err:
        raise BadInput(f"cannot read the sweep file: {err.strerror or type(err).__name__}") from None
    except ValueError as err:  # an embedded NUL in the name
        raise BadInput(f"not a usable file name: {err}") from None
    if not exists:
        raise BadInput("no such sweep file")
    if not regular:
        raise BadInput("not a regular file (a folder, a device or a pipe?)")
    if len(data) > limit:
        raise BadInput(
            f"larger than {limit // 1024} KiB, the limit for a sweep file (a sweep file holds values "
            "only; is this the right file?)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(f"not UTF-8 text (byte {err.start})") from None
