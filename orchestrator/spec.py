"""Sweep specification: YAML -> typed, fully validated `SweepSpec`.

Why this module is strict: a sweep runs for days on rented GPUs, so every mistake that can be found by reading
the YAML must be found *before* Ray or MLflow start. Every section forbids unknown keys, vocabularies are closed
(`Method`, `EvalSuite`, registry model names), and `SpecError` carries one human line naming the file, the dotted
key, the bad value and what is allowed (with close matches for names), which the CLI prints with exit code 2.

Layout of a sweep file (values only, no code)::

    name: teacher_vs_student
    reproduces: [supp_table4]
    grid: {student: [...], teacher: [...], data_fraction: [0.5], method: [ours], seed: [0]}
    eval: [clean, c, p]
    train: {...}; teacher_train: {...}; pretrain: {...}; pool: {...}; data: {...}; resources: {...}
    profiles: {local: {<any of the sections above, merged over the base>}, paper: {...}}

A profile is a partial override of the base sections; `--set a.b=v` overrides the merged result. Only `name` and
`grid` are required: a file without `profiles.local` runs on `--profile local` (the default) from built-in local
defaults (`LOCAL_DEFAULTS`: the embedded digits at local sizes), which every value in the file overrides. The resolved
document is validated as a whole, so an override can never smuggle in an unknown key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from orchestrator.inputs import BadInput, check_part, load_yaml, read_bounded, show, show_path
from orchestrator.spec_errors import first_error, lookup, unknown_key_msg
from orchestrator.spec_sections import (  # noqa: F401
    BUILTIN_PROFILES,
    LOCAL_DEFAULTS,
    DataConfig,
    PoolConfig,
    PretrainConfig,
    Resources,
    SearchConfig,
    Strict,
    TeacherTrainConfig,
    TrainConfig,
    check_teacher_overrides,
    merged_teacher_train,
    override_problem,
)
from trainables.vocab import (  # noqa: F401 - re-exported
    METHODS_WITHOUT_FEATURE_CACHE,
    METHODS_WITHOUT_FRACTION,
    METHODS_WITHOUT_TEACHER,
    EvalSuite,
    Method,
    did_you_mean,
)

# Limits (documented in README.md, "The CLI"); the YAML bounds live in orchestrator/inputs.py.
MAX_CELLS = 10_000  # cells of one sweep: computed from the axis lengths, before the product is expanded
MIN_FRACTION = 1e-6  # a data fraction below this selects no image of any real split
SEED_BOUND = 2**32  # seeds are 0 <= seed < 2**32 (numpy's RandomState range)


class SpecError(BadInput):
    """Bad user input in a sweep file or an override; its message is one line meant for a person."""


def _model_names(role: str) -> list[str]:
    from trainables.models import list_models  # the registry is the vocabulary; imported lazily (torch is heavy)

    return list(list_models(role))


def _check_names(values: list[str], role: str) -> list[str]:
    allowed = _model_names(role)
    for v in values:
        if v not in allowed:
            raise ValueError(f"unknown {role} {show(v)}{did_you_mean(v, allowed)}; allowed: {', '.join(allowed)}")
    return values


class Grid(Strict):
    """The grid axes. Cells are the product after dropping the axes a method ignores (see `plan.cells`)."""

    student: list[str] = Field(default_factory=list)
    teacher: list[str] = Field(default_factory=list)
    pairs: list[tuple[str, str]] = Field(default_factory=list)  # [student, teacher] pairs instead of a product
    data_fraction: list[float] = Field(default_factory=lambda: [0.5], min_length=1)
    method: list[Method] = Field(default_factory=lambda: [Method.ours], min_length=1)
    seed: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, v: list[tuple[str, str]]) -> list[tuple[str, str]]:
        _check_names([p[0] for p in v], "student")
        _check_names([p[1] for p in v], "teacher")
        return v

    @field_validator("student")
    @classmethod
    def _students(cls, v: list[str]) -> list[str]:
        return _check_names(v, "student")

    @field_validator("teacher")
    @classmethod
    def _teachers(cls, v: list[str]) -> list[str]:
        return _check_names(v, "teacher")

    @field_validator("data_fraction", mode="before")
    @classmethod
    def _fractions(cls, v: Any) -> Any:
        for a in v if isinstance(v, list) else []:
            if isinstance(a, bool) or not isinstance(a, (int, float)):
                raise ValueError(f"data fraction {show(a)} is not a number; allowed: a number in (0, 1]")
            if not math.isfinite(a) or not 0.0 < a <= 1.0:
                raise ValueError(f"data fraction {show(a)} is outside (0, 1]")
            if a < MIN_FRACTION:
                raise ValueError(
                    f"data fraction {show(a)} is below {MIN_FRACTION:g}; allowed: (0, 1], at least {MIN_FRACTION:g}"
                )
        return v

    @field_validator("seed", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        for s in v if isinstance(v, list) else []:
            if type(s) is not int:  # not bool, not "3", not 1e30 (a float that only looks whole)
                raise ValueError(f"seed {show(s)} is not a whole number; allowed: integers 0 <= seed < 2**32")
            if not 0 <= s < SEED_BOUND:
                raise ValueError(f"seed {show(s)} is outside 0 <= seed < 2**32")
        return v

    @model_validator(mode="after")
    def _teacher_needed(self) -> Grid:
        if self.pairs and (self.student or self.teacher):
            raise ValueError("give either grid.pairs or grid.student/grid.teacher, not both")
        if not self.pairs and not self.student and not self.teacher:
            raise ValueError(
                "the grid is empty: give grid.student (and grid.teacher), grid.pairs, "
                "or only grid.teacher for a teacher-only sweep"
            )
        needs_teacher = any(m not in METHODS_WITHOUT_TEACHER for m in self.method)
        if self.student and needs_teacher and not self.teacher:
            raise ValueError("methods 'ours' and 'wo_kd' need at least one teacher in grid.teacher")
        for axis in ("student", "teacher", "data_fraction", "method", "seed"):
            vals = getattr(self, axis)
            if len(set(map(str, vals))) != len(vals):
                seen: set[str] = set()
                dup = next(v for v in vals if str(v) in seen or seen.add(str(v)))
                raise ValueError(
                    f"grid.{axis} lists {show(getattr(dup, 'value', dup))} twice; each value may appear once"
                )
        if (n := self.n_cells()) > MAX_CELLS:
            raise ValueError(
                f"the grid has {n:,} cells ({self._shape()}); the limit is {MAX_CELLS:,} cells per "
                "sweep: split it into several sweep files"
            )
        return self

    def n_cells(self) -> int:
        """How many cells `plan.cells` will expand, computed from the axis lengths (nothing is expanded)."""
        if self.pairs:
            pairs = len(set(map(tuple, self.pairs)))
            students = len({p[0] for p in self.pairs})
        else:
            pairs, students = len(self.student) * max(len(self.teacher), 1), len(self.student)
        total = 0
        for m in set(self.method):
            per_seed = students if m in METHODS_WITHOUT_TEACHER else pairs
            total += per_seed * len(self.seed) * (1 if m in METHODS_WITHOUT_FRACTION else len(self.data_fraction))
        return total

    def _shape(self) -> str:
        who = (
            f"{len(self.pairs)} pairs"
            if self.pairs
            else f"{len(self.student)} students x {max(len(self.teacher), 1)} teachers"
        )
        return f"{who} x {len(self.method)} methods x {len(self.data_fraction)} fractions x {len(self.seed)} seeds"


class SweepSpec(Strict):
    """A whole, resolved sweep: one profile merged over the base, overrides applied."""

    name: str  # becomes a folder (`<storage>/results/<name>`) and the MLflow experiment: see `_name`
    description: str = ""
    reproduces: list[str] = Field(default_factory=list)
    grid: Grid
    eval: list[EvalSuite] = Field(default_factory=lambda: [EvalSuite.clean, EvalSuite.c], min_length=1)
    train: TrainConfig = TrainConfig()
    teacher_train: TeacherTrainConfig = TeacherTrainConfig()
    pretrain: PretrainConfig = PretrainConfig()
    pool: PoolConfig = PoolConfig()
    data: DataConfig = DataConfig()
    resources: Resources = Resources()
    model_overrides: dict[str, dict[str, int | float | str | bool]] = Field(default_factory=dict)
    # per-teacher `teacher_train` keys over the section's values (e.g. a smaller step for ViTs trained from scratch)
    teacher_overrides: dict[str, dict[str, int | float | bool | None]] = Field(default_factory=dict)
    weights: dict[str, str] = Field(default_factory=dict)  # model name -> paper tag or state-dict path
    search: SearchConfig | None = None
    profile: str = "local"

    @model_validator(mode="after")
    def _search_single_worker(self) -> SweepSpec:
        if self.search is not None and self.resources.workers_per_trial != 1:
            raise ValueError("search (Optuna inside a cell) runs on one worker: set resources.workers_per_trial: 1")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        try:
            return check_part(v, "sweep name")
        except BadInput as err:
            raise ValueError(str(err)) from None

    @field_validator("model_overrides", "weights")
    @classmethod
    def _known_models(cls, v: dict) -> dict:
        _check_names(list(v), "model")
        return v

    @field_validator("model_overrides")
    @classmethod
    def _override_values(cls, v: dict[str, dict[str, Any]]) -> dict:
        for model, knobs in v.items():
            for knob, value in knobs.items():
                if (problem := override_problem(knob, value)) is not None:
                    raise ValueError(f"{model}.{knob} = {show(value)}: {problem}")
        return v

    @field_validator("teacher_overrides")
    @classmethod
    def _teacher_overrides(cls, v: dict[str, dict[str, Any]], info: ValidationInfo) -> dict:
        _check_names(list(v), "teacher")
        return check_teacher_overrides(v, info.data.get("teacher_train"))

    def teacher_train_for(self, teacher: str) -> TeacherTrainConfig:
        """`teacher_train` with this teacher's `teacher_overrides` on top: what its naive pretraining, naive and
        robust fine-tuning run with. Why per teacher: one step size does not suit every family trained from
        scratch (ViTs stay at chance at the ResNets' Adam 1e-3; DeiT's rule gives ~6e-5 at batch 64)."""
        return merged_teacher_train(self.teacher_train, self.teacher_overrides.get(teacher, {}))

    @field_validator("reproduces")
    @classmethod
    def _tables(cls, v: list[str]) -> list[str]:
        from orchestrator.tables import TABLE_IDS

        for t in v:
            if t not in TABLE_IDS:
                raise ValueError(f"unknown table {t!r}{did_you_mean(t, TABLE_IDS)}; allowed: {', '.join(TABLE_IDS)}")
        return v

    def content_hash(self) -> str:
        """Hash of the resolved spec (what was run), used to tag the MLflow parent run. How cells are packed into
        trials (or the node memory declared for the footprint check, or how many shard tasks run at once) changes
        nothing they compute, so a sweep resumed with other packing is the same sweep."""
        same = {"cells_per_trial", "node_memory_gb", "shard_tasks"}
        dumped = self.model_dump(mode="json", exclude={"resources": same})
        return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


PROFILE_SECTIONS = frozenset(SweepSpec.model_fields) - {"name", "profile", "reproduces", "description"}

# --------------------------------------------------------------------------------------------------- loading


def load_spec(path: str | Path, profile: str = "local", overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read, merge and validate a sweep file.

    Args:
        path: the YAML file (at most `inputs.MAX_SPEC_BYTES`, read with `inputs.BoundedLoader`).
        profile: which entry of `profiles:` to merge over the base sections; `local` may be left undefined:
            the file's sections then merge over the built-in `LOCAL_DEFAULTS` (orchestrator/spec_sections.py).
        overrides: `KEY=VALUE` strings; VALUE is parsed as YAML (`3`, `1e-3`, `[a, b]`, `true`) by the same
            bounded loader.

    Returns:
        The validated `SweepSpec`.

    Raises:
        SpecError: with a one-line message naming the file, key, value and what is allowed.
    """
    path = Path(path)
    src = show_path(path)
    raw = _read_yaml(path, src)
    profiles = raw.pop("profiles", {}) or {}
    if not isinstance(profiles, dict):
        raise SpecError(f"{src}: key 'profiles': expected a mapping of profile name -> overrides, got {show(profiles)}")
    if profile not in profiles and profile in BUILTIN_PROFILES:
        raw = _deep_merge(BUILTIN_PROFILES[profile], raw)  # built-in defaults under the file: the file wins
    elif profile not in profiles:
        names = sorted({*profiles, *BUILTIN_PROFILES}, key=str)
        allowed = ", ".join(show(p, 40) + (" (built in)" if p not in profiles else "") for p in names)
        raise SpecError(f"{src}: --profile {show(profile)} is not defined under 'profiles'; allowed: {allowed}")
    body = profiles.get(profile) or {}
    if not isinstance(body, dict):
        raise SpecError(f"{src}: key 'profiles.{show(profile)[1:-1]}': expected a mapping, got {show(body)}")
    for key in body:
        if key not in PROFILE_SECTIONS:
            raise SpecError(unknown_key_msg(src, f"profiles.{profile}.{key}", key, sorted(PROFILE_SECTIONS)))
    merged = _deep_merge(raw, body)
    merged["profile"] = profile
    for item in overrides:
        _apply_override(src, merged, item)
    try:
        return SweepSpec.model_validate(merged)
    except ValidationError as err:
        msg = first_error(src, err, merged, SweepSpec)
        raise SpecError(_with_origin(msg, err, body, profile, overrides)) from None


def _with_origin(msg: str, err: ValidationError, body: dict, profile: str, overrides) -> str:
    """Say where the bad key came from: an override, the profile, or the base document."""
    loc = [str(p) for p in err.errors(include_url=False)[0]["loc"] if not isinstance(p, int)]
    dotted = ".".join(loc)
    for item in overrides:
        key = item.partition("=")[0].strip()
        if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
            return f"{msg} (from --set {show(item)})"
    if loc and lookup(body, tuple(loc[:1])) is not None and _present(body, loc):
        return f"{msg} (from profiles.{show(profile)[1:-1]}.{show(dotted)[1:-1]})"
    return msg


def _present(doc: Any, loc: list[str]) -> bool:
    node = doc
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _read_yaml(path: Path, src: str) -> dict[str, Any]:
    try:
        data = load_yaml(read_bounded(path))
    except BadInput as err:  # too big, too deep, an alias bomb, a duplicate key, not a file, not UTF-8
        raise SpecError(f"{src}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or next(iter(str(err).splitlines()), "") or type(err).__name__
        raise SpecError(f"{src}: malformed YAML{where}: {show(problem, 200)[1:-1]}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{src}: expected a mapping at the top level (name, grid, ...), got {type(data).__name__}")
    return data


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# Top-level keys `--set` may not touch: they choose *which* values apply rather than being values themselves.
_NOT_SETTABLE = {
    "profile": "choose the profile with --profile NAME, not --set",
    "profiles": "profiles are edited in the sweep file; choose one with --profile NAME",
}


def _apply_override(src: str, doc: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not key.strip() or any(not part for part in parts):
        raise SpecError(f"{src}: --set {show(item)}: expected KEY=VALUE with a dotted key, e.g. train.epochs=3")
    if parts[0] in _NOT_SETTABLE:
        raise SpecError(f"{src}: --set {show(item)}: {show(parts[0])} is not a spec value; {_NOT_SETTABLE[parts[0]]}")
    if len(parts) > 8:
        raise SpecError(f"{src}: --set {show(item)}: the key has {len(parts)} parts; spec keys have at most 8")
    try:
        parsed = load_yaml(value) if value.strip() else ""
    except BadInput as err:
        raise SpecError(f"{src}: --set {show(item)}: {err}") from None
    except yaml.YAMLError:
        raise SpecError(
            f"{src}: --set {show(item)}: the value {show(value)} is not a valid YAML scalar or list"
        ) from None
    node = doc
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            where = ".".join(parts[: i + 1])
            raise SpecError(f"{src}: --set {show(item)}: key {show(where)} holds a value, not a section")
        node = nxt
    node[parts[-1]] = parsed
