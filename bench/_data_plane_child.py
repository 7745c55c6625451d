"""One stage of bench/data_plane.py in its own process: prints {wall_s, peak_rss, peak_anon, base_anon} as JSON.

Why a process per stage: peak RSS is a per-process high-water mark; each stage must start from a fresh one."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _sample(peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], _status("RssAnon"))
        time.sleep(0.05)


def _read_pool(d: dict, work: Path, size: int) -> None:
    import torch

    from trainables.artifacts import write_model_json
    from trainables.build import build_teacher, source_split
    from trainables.common import save
    from trainables.kinds import ModelRef

    train, _ = source_split(d)
    pool = {"x": train.images[: len(train) // 4], "y": train.labels[: len(train) // 4]}
    out = work / "pool"
    out.mkdir(parents=True)
    save({"train": {"x": train.images, "y": train.labels}, "pool": pool, "classes": train.classes}, out / "pool.pt")
    teacher = work / "teacher"
    teacher.mkdir()
    torch.manual_seed(0)
    net = build_teacher(ModelRef("resnet34"), len(train.classes), size)
    write_model_json(teacher, "teacher", ModelRef("resnet34"), len(train.classes), size, train.classes)
    save(net.state_dict(), teacher / "model.pt")


def _stage(stage: str, d: dict, work: Path, size: int) -> None:
    from trainables.common import StageContext
    from trainables.kinds import EvalSetsInputs, FeaturesInputs, ModelRef, TargetsInputs
    from trainables.pipeline import run_stage

    ctx = StageContext(threads=2)
    out = work / stage
    out.mkdir(parents=True)
    if stage == "build_eval_sets":
        run_stage(stage, EvalSetsInputs(d, ["clean", "c"], 0), {}, out, ctx)
    elif stage == "extract_features":
        deps = {"pool": work / "pool", "eval": work / "build_eval_sets"}
        run_stage(stage, FeaturesInputs(ModelRef("vit_small", {"patch_size": 16}), 0.1, "float16"), deps, out, ctx)
    else:
        deps = {"teacher": work / "teacher", "pool": work / "pool"}
        run_stage(stage, TargetsInputs("resnet34", "float16"), deps, out, ctx)


def main() -> None:
    stage, work, data, size = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
    import torch

    from trainables import data as tdata
    from trainables import footprint

    torch.set_num_threads(2)
    tdata.RESIDENT_BYTES = int(footprint.RESIDENT_BYTES * (size / 224) ** 2)  # the 224 px path at `size` px
    d = {"source": "imagenet", "image_size": size, "n_train": None, "n_test": None, "c_per_cell": None}
    d.update({"p_sequences": 1, "p_frames": 2, "roots": data["roots"]})
    peak, base = [0], _status("RssAnon")
    threading.Thread(target=_sample, args=(peak,), daemon=True).start()
    t = time.perf_counter()
    if stage == "read_pool":
        _read_pool(d, work, size)
    else:
        _stage(stage, d, work, size)
    wall = time.perf_counter() - t
    peak[0] = max(peak[0], _status("RssAnon"))
    print(json.dumps({"wall_s": wall, "peak_rss": _status("VmHWM"), "peak_anon": peak[0], "base_anon": base}))


if __name__ == "__main__":
    main()
