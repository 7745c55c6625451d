"""How the paper names things: models, methods, the no-data mark, and the order the paper lists them in.

Shared by several tables and by render.py (main Figure 1's legend), so it sits apart from any one table.
"""

from __future__ import annotations

from trainables.vocab import Method

MISSING = "—"

# Registry model -> the paper's name.
LABELS = {
    "resnet34": "RN-34",
    "resnet50": "RN-50",
    "resnet101": "RN-101",
    "resnet152": "RN-152",
    "vit_small": "ViT-S",
    "vit_base": "ViT-B",
    "clip_rn50": "CLIP RN-50",
    "clip_rn101": "CLIP RN-101",
    "clip_vit_b16": "CLIP ViT-B/16",
    "clip_vit_b32": "CLIP ViT-B/32",
    "clip_vit_l14_336": "CLIP ViT-L/14@336",
    "lit_b16b": "LiT-B/16B",
    "none": "none (APT)",
}

# Method -> the paper's name, in legend order (render.py colours main Figure 1's points by this order). Keyed by
# the plain value: row filters and MLflow params hold strings, and `str(Method.ours)` is "Method.ours".
METHODS: dict[str, str] = {
    m.value: label
    for m, label in (
        (Method.ours, "ours"),
        (Method.wo_kd, "w/o KD"),
        (Method.apt, "APT"),
        (Method.full_ft, "complete FT"),
        (Method.wise_ft, "WiSE-FT"),
        (Method.original, "original"),
    )
}

# Rows taken from run params sort known names in the paper's order (APT's teacher 'none' first).
ORDER = (
    "none",
    "resnet34",
    "resnet50",
    "resnet101",
    "vit_small",
    "resnet152",
    "vit_base",
    "clip_rn50",
    "clip_rn101",
    "clip_vit_b16",
    "clip_vit_b32",
    "clip_vit_l14_336",
    "ours",
    "full_ft",
    "wise_ft",
    "apt",
    "wo_kd",
    "original",
)


def pretty(name: str) -> str:
    """The paper's name for a registry model (raw name when the paper has none)."""
    return LABELS.get(name, name)


def student_teacher(where: dict) -> str:
    """A row label `student ← teacher` (Table 3's pairs; Figures 3 and 4, where APT's teacher is 'none')."""
    return f"{pretty(where['student'])} ← {pretty(where['teacher'])}"
