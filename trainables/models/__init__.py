"""Model registry (timm-style) for the paper's teachers and students, and the student's frozen | trunk | heads split.

Every model takes [0, 1] images and normalises itself. Layout (as timm's `models/`):

    _registry.py   ModelCfg / SplitRule, `register_model`, `list_models`, `get_model_cfg`
    _builder.py    `build_network`: the one builder every entry point delegates to
    _factory.py    `create_teacher` / `create_student`: name -> weights -> network -> Teacher / Student
    _layers.py     adapters shared by the families (normalisation, cut residual blocks, token pooling)
    _params.py     which parameters the split may tune, counted once
    resnet.py, vit.py, clip.py   one family each: adapters, unit chain, split rule, registered entry points
    student.py     Student (frozen part, tuned trunk, three heads, S0) and Teacher
    split.py       where the chain is cut (the split rule), and supplement Table 5's counts
    weights.py     state-dict files: read without running code, checked before loading
"""

from __future__ import annotations

# The family modules register their entry points when imported, so their import order IS the order of
# `list_models()` (and of the sweep vocabulary and Table 5's rows). They come first: `student` imports `clip`,
# and importing it before `resnet` and `vit` would register the CLIP models first.
from trainables.models import resnet, vit, clip  # isort: skip  (the order above)

from trainables.models._builder import build_network
from trainables.models._factory import create_student, create_teacher
from trainables.models._layers import Normalize
from trainables.models._registry import (
    ModelCfg,
    SplitRule,
    UnknownModelError,
    get_model_cfg,
    list_models,
    model_entrypoint,
    register_model,
)
from trainables.models.split import paper_counts, split_point, supp_table5_rows
from trainables.models.student import Student, Teacher
from trainables.models.weights import load_state_dict_file
from trainables.vocab import HEADS  # the student's heads; importable from here for existing callers

__all__ = [
    "HEADS",
    "ModelCfg",
    "Normalize",
    "SplitRule",
    "Student",
    "Teacher",
    "UnknownModelError",
    "build_network",
    "clip",
    "create_student",
    "create_teacher",
    "get_model_cfg",
    "list_models",
    "load_state_dict_file",
    "model_entrypoint",
    "paper_counts",
    "register_model",
    "resnet",
    "split_point",
    "supp_table5_rows",
    "vit",
]
