"""pydantic's validation errors as the one line a person reads: file, dotted key, the value, what is allowed.

Why apart from the spec: the spec says what is valid, this says how a refusal reads; both CLIs' messages follow
style.md rule 8 through these helpers (values escaped and shortened by `orchestrator.inputs.show`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.inputs import show
from trainables.vocab import did_you_mean


def unknown_key_msg(src: str, dotted: str, key: Any, allowed: list[str]) -> str:
    return f"{src}: unknown key {show(dotted, 120)}{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}"


def lookup(doc: Any, loc: tuple) -> Any:
    node = doc
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def first_error(src: str, err: ValidationError, doc: dict, root: type[BaseModel]) -> str:
    """Turn pydantic's first error into the one line the user sees (`root`: the model `doc` was validated as)."""
    e = err.errors(include_url=False)[0]
    loc = tuple(e["loc"])
    dotted = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
    if e["type"] == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        allowed = sorted(model.model_fields) if model is not None else []
        return unknown_key_msg(src, dotted, str(loc[-1]), allowed)
    value = lookup(doc, loc) if e["type"] != "missing" else None
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "missing":
        return f"{src}: missing required key {show(dotted, 120)}"
    if e["type"] == "enum":
        allowed = e.get("ctx", {}).get("expected", "")
        hint = did_you_mean(value, [a.strip(" '") for a in allowed.replace(" or ", ",").split(",")], n=1)
        return f"{src}: key {show(dotted, 120)}: {show(value)} is not allowed{hint}; allowed: {allowed}"
    shown = f" {show(value)}" if value is not None and not isinstance(value, (dict, list)) else ""
    return f"{src}: key {show(dotted, 120)}:{shown} {msg}"


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model
