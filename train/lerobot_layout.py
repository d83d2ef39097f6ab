"""LeRobot's dataset layout (format v3.0, lerobot 0.4.x) as our export and import read and write it.

    python -m train.data export-lerobot rec/ --out lerobot-rec/ --repo-id me/mobile-vla-room1
    python -m train.data import-lerobot lekiwi-data/ --out episodes/ --camera front

Facts from LeRobot's own source (huggingface/lerobot v0.4.4: `datasets/utils.py`,
`datasets/lerobot_dataset.py`, `robots/lekiwi/lekiwi.py`), written once here:

    meta/info.json                      codebase_version "v3.0", fps, features, data_path, video_path, totals
    meta/stats.json                     per feature: min, max, mean, std, count, q01..q99 (images per channel, 0..1)
    meta/tasks.parquet                  the task strings as the (pandas) index, column task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, tasks, where its data and video are
    data/chunk-000/file-000.parquet     one row per frame: the features, timestamp, frame_index, episode_index,
                                        index, task_index
    videos/{key}/chunk-000/file-000.mp4 the camera's frames (RGB), episode by episode

LeKiwi (LeRobot's three-omni-wheel base) names its base velocities `x.vel`
(m/s, forward), `y.vel` (m/s, to the left) and `theta.vel` (deg/s,
counter-clockwise) in `action` and `observation.state`, beside its arm's
`arm_*.pos`; its cameras are `observation.images.front` and
`observation.images.wrist`. Ours are (linear_x m/s, linear_y m/s, angular_z
rad/s) with the same signs: only the turn rate changes unit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
CHUNKS_SIZE = 1000  # files per chunk folder (LeRobot's DEFAULT_CHUNK_SIZE)
DATA_FILES_SIZE_IN_MB = 100  # LeRobot's defaults, recorded in info.json
VIDEO_FILES_SIZE_IN_MB = 200
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # the q01..q99 of LeRobot's stats

# LeRobot's frame bookkeeping, in every dataset (DEFAULT_FEATURES)
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}

BASE_KEYS = ("x.vel", "y.vel", "theta.vel")  # LeKiwi's base velocity names
DEG_PER_RAD = 180.0 / math.pi  # theta.vel is deg/s in LeKiwi, angular_z rad/s here
CAMERA = "observation.images.front"  # LeKiwi's base camera: where our one camera goes
# Our extra per-frame features (LeRobot carries unknown features through; readers that do not know them ignore them)
INTERVENTION = "intervention"  # bool: a person's command (runtime.drive --teleop take-over), LeRobot's rollout tag
CAPTURE_TIME = "capture_time"  # float32 s from the episode's first frame: the recorder's real capture times
EVENT = "action_event"  # int64 index into EVENT_NAMES: the collector's action_event_types
EVENT_NAMES = ("episode_start", "start_action", "stop_action")
ATTRS_COLUMN = "mobile_vla/attrs"  # episodes parquet: the episode file's attributes as JSON


class LeRobotFormatError(ValueError):
    """A LeRobot dataset folder we cannot read or write; the message names the file or key and what was found."""


def read_info(root: Path) -> dict:
    """meta/info.json of a v3.x dataset, checked."""
    path = Path(root) / INFO_PATH
    if not path.is_file():
        raise LeRobotFormatError(f"{root}: no {INFO_PATH}; not a LeRobot dataset folder (format {CODEBASE_VERSION})")
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise LeRobotFormatError(f"{path}: not JSON ({e})") from e
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise LeRobotFormatError(f"{path}: codebase_version {version or '(none)'}; this reads LeRobot's v3.x format "
                                 f"(convert older datasets with lerobot's convert_dataset_v21_to_v30)")
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise LeRobotFormatError(f"{path}: no '{key}' (has: {', '.join(sorted(info))})")
    return info


def feature_names(feature: dict) -> list[str]:
    """A vector feature's names: a list, or LeRobot's older {"motors": [...]} form."""
    names = feature.get("names")
    if isinstance(names, dict):
        names = next(iter(names.values()), [])
    return [str(n) for n in (names or [])]
