"""Loads our LeRobot export with LeRobot's own loader and compares it with what the processor wrote.

Runs in LeRobot's environment (`make lerobot-check` makes .venv-lerobot: `lerobot-dataset` 0.4.4,
import name `ledataset`, with torch and torchvision), never in the project's: it imports nothing of the
project. Its input is the folder real_export.py writes: ``lerobot/`` (the export) and ``reference.npz``
(the processor's frames decoded by us, and its states, actions and commands).

What "equal" means here:
- states, actions, commands, episode and frame indices: exactly equal (float32 bit patterns).
- frames: the export stores the processor's JPEGs unchanged (no video), so LeRobot decodes the same
  bytes we do. Its frame (float32 CHW in [0, 1], torchvision ToTensor) times 255, rounded, must equal
  our uint8 RGB decoding pixel for pixel; the largest difference found is reported.

Prints a JSON report; exits 1 when anything differs.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
import time
from pathlib import Path

import numpy as np


def main() -> int:
    folder = Path(sys.argv[1])
    import ledataset
    import torch
    from ledataset.datasets.lerobot_dataset import LeRobotDataset

    with np.load(folder / "reference.npz") as npz:
        ref = {k: npz[k] for k in npz.files}  # read once: an NpzFile decompresses on every access
    started = time.perf_counter()
    ds = LeRobotDataset("scale-diffusion/check", root=folder / "lerobot")
    fps = int(ref["fps"])
    problems: list[str] = []
    if ds.fps != fps:
        problems.append(f"fps {ds.fps} != {fps}")
    if len(ds) != len(ref["state"]):
        problems.append(f"{len(ds)} frames, the processor wrote {len(ref['state'])}")
    max_pixel_diff = 0
    frames_equal = 0
    for i in range(min(len(ds), len(ref["state"]))):
        item = ds[i]
        img = item["observation.images.front"]
        if tuple(img.shape) != (3, *ref["frames"].shape[1:3]) or img.dtype != torch.float32:
            problems.append(f"frame {i}: shape {tuple(img.shape)} {img.dtype}")
            continue
        ours = ref["frames"][i].astype(np.int16)
        theirs = np.rint(img.permute(1, 2, 0).numpy() * 255.0).astype(np.int16)
        diff = int(np.abs(ours - theirs).max())
        max_pixel_diff = max(max_pixel_diff, diff)
        frames_equal += diff == 0
        for key, want in (("observation.state", ref["state"][i]), ("action", ref["action"][i])):
            got = item[key].numpy()
            if got.dtype != np.float32 or got.tobytes() != want.tobytes():
                problems.append(f"frame {i}: {key} {got.tolist()} != {want.tolist()}")
        for key, want in (("observation.command", ref["command"][i]), ("episode_index", ref["episode_index"][i]),
                          ("frame_index", ref["frame_index"][i]), ("index", i)):
            if int(item[key].item()) != int(want):
                problems.append(f"frame {i}: {key} {item[key].item()} != {want}")
        if item["timestamp"].item() != np.float32(ref["frame_index"][i] / fps):
            problems.append(f"frame {i}: timestamp {item['timestamp'].item()}")
        if item["task"] != "Drive along the planned route, following the navigation command.":
            problems.append(f"frame {i}: task {item['task']!r}")
    if frames_equal != len(ds):
        problems.append(f"{len(ds) - frames_equal} frames differ from our decoding (max {max_pixel_diff})")

    # LeRobot's own timestamp check (1/fps apart within tolerance_s) runs when asking for neighbours.
    near = LeRobotDataset("scale-diffusion/check", root=folder / "lerobot",
                          delta_timestamps={"action": [0.0, 1 / fps, 2 / fps]})
    window = near[0]["action"].numpy()
    if window.tobytes() != ref["action"][:3].tobytes():
        problems.append(f"delta_timestamps action window {window.tolist()} != {ref['action'][:3].tolist()}")
    # One split on its own: the validation episodes named in info.json.
    val_from, val_to = (int(x) for x in ds.meta.info["splits"]["val"].split(":"))
    val = LeRobotDataset("scale-diffusion/check", root=folder / "lerobot", episodes=list(range(val_from, val_to)))
    want_val = int((ref["episode_index"] >= val_from).sum())
    if len(val) != want_val:
        problems.append(f"val split has {len(val)} frames, want {want_val}")

    report = {
        "loader": f"lerobot-dataset {metadata.version('lerobot-dataset')} ({ledataset.__name__}), torch {torch.__version__}",
        "codebase_version": ds.meta.info["codebase_version"], "episodes": ds.num_episodes, "frames": len(ds),
        "frame_shape": list(ds[0]["observation.images.front"].shape), "frames_equal": frames_equal,
        "max_pixel_diff": max_pixel_diff, "states_actions_exact": not any("state" in p or "action" in p
                                                                         for p in problems),
        "val_frames": len(val), "seconds": round(time.perf_counter() - started, 1), "problems": problems[:20],
    }
    print(json.dumps(report, indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
