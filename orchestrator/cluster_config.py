"""`python -m orchestrator.cluster_config [cluster.yaml]`: is a cluster-launcher file ready for `ray up`?

Why: `ray up` substitutes nothing. A `${VAR}` reaches the node's shell as an empty string (the EFS mount then
fails after minutes of setup), and a placeholder AMI id fails only when EC2 is asked for it. This check reads the
file and names, in one line, every value still to fill in (`FILL_ME...`) or left as a `${...}` substitution the
launcher will never make; exit 2 if there is any, 0 when the file is ready. (Ray's own schema check runs in
tests/test_cluster_yaml.py: `ray up` applies it anyway.)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

FILL_ME = re.compile(r"FILL_ME[A-Za-z0-9_]*")
# ${VAR} or ${VAR:-default}: bash expands it on the node, where the launcher has set none of the user's variables
SUBSTITUTION = re.compile(r"\$\{[^}]*\}")


def unfilled(text: str) -> list[tuple[int, str]]:
    """(line number, token) of every value still to fill in; comments are ignored."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        out += [(n, m.group(0)) for m in FILL_ME.finditer(code)]
        out += [(n, m.group(0)) for m in SUBSTITUTION.finditer(code)]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0] if argv else "cluster.yaml")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        print(f"error: {path}: cannot read it ({type(err).__name__})", file=sys.stderr)
        return 2
    left = unfilled(text)
    if left:
        where = ", ".join(f"line {n}: {tok}" for n, tok in left)
        print(f"error: {path}: fill in before `ray up` ({where}); see docs/cluster.md", file=sys.stderr)
        return 2
    print(f"{path}: no values left to fill in")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
