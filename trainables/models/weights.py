"""Weights from state-dict files: read without running code from them, and checked before loading.

Why checked: `load_state_dict`'s own error lists every key; a person needs the file, the kind of mismatch and a
few example keys. Hub weights are not read here: the libraries load those themselves (see `_builder.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from trainables.models.student import S0, Student


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a file, without running code: torch.load(weights_only=True) or safetensors.

    Accepts a plain state dict or one wrapped as {'state_dict': ...} / {'model': ...}; strips a DDP `module.`.

    Args:
        path: a `torch.save`d file or a .safetensors file.

    Returns:
        The state dict (names -> tensors, on the CPU).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read, or holds something other than a state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such weights file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p))
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is the same problem for the user: say which and why
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ValueError(f"{p}: not a readable state-dict file ({first})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise ValueError(f"{p}: expected a state dict (names -> tensors), got {type(obj).__name__}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def _mismatch(module: nn.Module, state: Mapping[str, Tensor], strict: bool) -> str:
    own = module.state_dict()
    if isinstance(module, Student) and not any(k.startswith(S0 + ".") for k in state):
        own = {k: v for k, v in own.items() if not k.startswith(S0 + ".")}  # S0 is re-taken after loading
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = [f"{len(shapes)} shape mismatches (file vs model), e.g. {'; '.join(shapes[:2])}"] if shapes else []
    if strict and missing:
        problems.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:3])}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:3])}")
    return "; ".join(problems)


def load_checked(module: nn.Module, state: Mapping[str, Tensor], path: str | Path, strict: bool = True) -> None:
    """`module.load_state_dict(state)`, after checking that it fits, so a wrong file fails with a readable message.

    Args:
        module: the model; a Student may be given a state dict without S0 (it is re-taken after loading).
        state: the state dict.
        path: where `state` came from, for the message.
        strict: as in `nn.Module.load_state_dict`; shapes must match either way.

    Raises:
        ValueError: mis-shaped keys, or (strict) missing or unexpected ones; the message names a few of each.
    """
    problem = _mismatch(module, state, strict)
    if problem:
        raise ValueError(f"{path}: state dict does not fit {type(module).__name__}: {problem}")
    module.load_state_dict(state, strict=strict)


def load_either(net: nn.Module, wrapper: nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    """Load the library's own keys into `net`, anything else into `wrapper` (e.g. a file this code saved).

    Args:
        net: the library's network inside `wrapper`.
        wrapper: the module this package built around `net` (e.g. a Teacher: keys under `net.`).
        state: the state dict.
        path: where `state` came from, for the message.

    Raises:
        ValueError: `state` fits neither (see `load_checked`).
    """
    load_checked(net if set(state) == set(net.state_dict()) else wrapper, state, path)


def load_state_dict_file(module: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load weights into `module` from a file, without running code from it.

    Args:
        module: the model (a Teacher, a Student, or any nn.Module).
        path: a `torch.save`d state dict (plain, or under 'state_dict' / 'model') or a .safetensors file.
        strict: as in `nn.Module.load_state_dict`; shapes must match either way.

    Returns:
        The module, loaded.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a state dict, or one that does not fit the module (names the missing, unexpected and
            mis-shaped keys).
    """
    load_checked(module, read_state_dict(path), path, strict)
    return module
