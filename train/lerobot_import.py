"""Episodes in our layout from a local LeRobot dataset (format v3.0): LeKiwi's base velocities, one camera.

    python -m train.data import-lerobot lekiwi-data/ --out episodes/ --camera front
    python -m train.data import-lerobot DIR --out episodes/ --action-keys x.vel,y.vel
    python -m train.fit --data episodes/ --action-axes 2 ...

    from train.lerobot_import import ImportSpec, import_lerobot
    written = import_lerobot(ImportSpec(Path("lekiwi-data"), Path("episodes")))

Read with pyarrow and PyAV only (the `datasets` extra). What is taken:

- the frames of one camera (`--camera`: a key of info.json's features, with
  or without `observation.images.`; default: LeKiwi's `front` when present,
  else the only camera), decoded from its MP4s (or the PNGs of an image
  feature) at each frame's timestamp, stored BGR as the robot's camera gives them;
- the action's base velocities by name (`--action-keys`, default
  `x.vel,y.vel,theta.vel` of `action`): x.vel and y.vel in m/s as they are,
  theta.vel from LeKiwi's deg/s to rad/s; everything else in `action` (an
  arm's `arm_*.pos`) is left out. A dataset without them is refused, naming
  the action names it has. Without theta.vel the turn is 0;
- the frame's task as the instruction (at most 256 bytes, the episode
  format's limit: a longer one is refused naming it);
- `intervention`, `capture_time` and `action_event` when present (our own
  export writes them), the episode's attributes from `mobile_vla/attrs`;
  otherwise the frame spacing is 1 / fps and the mode continuous.

Episodes are numbered on after what `--out` holds; each is written to a
hidden name and renamed when complete (runtime/episode_writer.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.recording.episode_writer import EPISODE_NAME, EVENT_TYPES, EpisodeWriter, existing_episodes
from runtime.recording.recorder import RecordConfig
from train.lerobot_layout import (
    ATTRS_COLUMN,
    BASE_KEYS,
    CAMERA,
    CAPTURE_TIME,
    EPISODES_DIR,
    EVENT,
    EVENT_NAMES,
    INTERVENTION,
    TASKS_PATH,
    LeRobotFormatError,
    feature_names,
    read_info,
)

log = logging.getLogger(__name__)
# attributes the writer sets itself, or that describe the original file: not copied back from mobile_vla/attrs
WRITER_ATTRS = {"episode_name", "num_frames", "total_duration", "complete", "source_file"}


@dataclass(frozen=True)
class ImportSpec:
    root: Path  # the LeRobot dataset folder (meta/info.json, data/, videos/)
    out: Path  # our episode folder (created; episodes numbered on after what it holds)
    camera: str | None = None  # feature key or its last part ("front"); None: front if present, else the only one
    action_keys: tuple[str, ...] = BASE_KEYS  # x.vel, y.vel[, theta.vel] in the action's names
    compression: int = RecordConfig.compression  # gzip level of the frames (runtime.record --compression)


def choose_camera(info: dict, root: Path, camera: str | None) -> str:
    cameras = [k for k, f in info["features"].items() if f.get("dtype") in ("video", "image")]
    if not cameras:
        raise LeRobotFormatError(f"{root}: no camera (video or image feature) in meta/info.json "
                                 f"(features: {', '.join(info['features'])})")
    if camera is None:
        if CAMERA in cameras:
            return CAMERA
        if len(cameras) == 1:
            return cameras[0]
        raise LeRobotFormatError(f"{root}: {len(cameras)} cameras ({', '.join(cameras)}); choose one with --camera")
    for key in (camera, f"observation.images.{camera}"):
        if key in cameras:
            return key
    raise LeRobotFormatError(f"--camera {camera}: not a camera of {root} (cameras: {', '.join(cameras)})")


def action_columns(info: dict, root: Path, keys: tuple[str, ...]) -> list[int]:
    """Indices of the base velocities in the action vector; a clear error when they are not there."""
    feature = info["features"].get("action")
    names = feature_names(feature) if feature else []
    if len(keys) not in (2, 3) or keys[:2] != BASE_KEYS[:2] or (len(keys) == 3 and keys[2] != BASE_KEYS[2]):
        raise LeRobotFormatError(f"--action-keys {','.join(keys)}: expected x.vel,y.vel or x.vel,y.vel,theta.vel "
                                 f"(LeKiwi's base velocities)")
    missing = [k for k in keys if k not in names]
    if feature is None or missing:
        has = ", ".join(names) if names else "no named 'action' feature"
        raise LeRobotFormatError(f"{root}: the dataset has no base velocities {', '.join(missing or keys)} in "
                                 f"'action' (it has: {has}); this imports a mobile base's x.vel, y.vel[, theta.vel] "
                                 f"(LeKiwi's names), choose them with --action-keys")
    return [names.index(k) for k in keys]


def read_table(paths: list[Path]):
    import pyarrow as pa  # noqa: PLC0415  pyarrow: the datasets extra, loaded when a dataset is read
    import pyarrow.parquet as pq  # noqa: PLC0415  as above

    if not paths:
        raise LeRobotFormatError("no parquet files")
    return pa.concat_tables([pq.read_table(p) for p in paths], promote_options="default")


def read_tasks(root: Path) -> dict[int, str]:
    """task_index -> task, from meta/tasks.parquet (the tasks are its pandas index, or a 'task' column)."""
    import pyarrow.parquet as pq  # noqa: PLC0415  pyarrow: the datasets extra

    path = Path(root) / TASKS_PATH
    if not path.is_file():
        raise LeRobotFormatError(f"{root}: no {TASKS_PATH}")
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
    index_cols = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    text_col = "task" if "task" in table.column_names else (index_cols[0] if index_cols else None)
    if text_col is None or "task_index" not in table.column_names:
        raise LeRobotFormatError(f"{path}: expected the tasks as its index (or a 'task' column) and a task_index "
                                 f"column, found columns {table.column_names}")
    return dict(zip(table.column("task_index").to_pylist(), table.column(text_col).to_pylist()))


def decode_frames(path: Path, timestamps: np.ndarray, fps: float) -> np.ndarray:
    """RGB frames of a video at the given times (s): the decoded frame nearest each, within half a frame."""
    import av  # noqa: PLC0415  PyAV: the datasets extra, loaded when a dataset is read

    if not path.is_file():
        raise LeRobotFormatError(f"{path}: video file missing")
    frames, stamps = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        last = float(np.max(timestamps)) if len(timestamps) else 0.0
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else len(frames) / fps
            if t > last + 1.0 / fps:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
            stamps.append(t)
    if not frames:
        raise LeRobotFormatError(f"{path}: no frames decoded")
    stamps = np.asarray(stamps)
    nearest = np.abs(stamps[None, :] - np.asarray(timestamps)[:, None]).argmin(1)
    off = np.abs(stamps[nearest] - timestamps)
    if np.any(off > 0.5 / fps):
        i = int(off.argmax())
        raise LeRobotFormatError(f"{path}: no frame near {timestamps[i]:.3f} s (nearest {stamps[nearest[i]]:.3f} s)")
    return np.stack([frames[i] for i in nearest])


def image_frames(root: Path, paths: list) -> np.ndarray:
    """RGB frames of an image feature (PNG bytes or paths, as LeRobot stores them in parquet)."""
    import cv2  # noqa: PLC0415  OpenCV: decoding the PNGs of an image feature

    out = []
    for item in paths:
        data = item.get("bytes") if isinstance(item, dict) else None
        if data is None:
            data = (Path(root) / item["path"]).read_bytes()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise LeRobotFormatError(f"{root}: an image of the camera feature does not decode")
        out.append(image[..., ::-1])
    return np.stack(out)


def import_lerobot(spec: ImportSpec, progress=None) -> list[Path]:
    """Write one of our episodes per LeRobot episode; returns their paths."""
    root = Path(spec.root)
    info = read_info(root)
    fps = float(info["fps"])
    camera = choose_camera(info, root, spec.camera)
    columns = action_columns(info, root, tuple(spec.action_keys))
    tasks = read_tasks(root)
    data = read_table(sorted(root.glob("data/*/*.parquet"))).to_pydict()
    episodes = read_table(sorted((root / EPISODES_DIR).glob("*/*.parquet"))).to_pylist()
    order = np.argsort(np.asarray(data["index"]))
    by_episode: dict[int, list[int]] = {}
    for row in order:
        by_episode.setdefault(int(data["episode_index"][row]), []).append(int(row))
    is_video = info["features"][camera]["dtype"] == "video"
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    numbers = existing_episodes(out)
    k = numbers[-1] + 1 if numbers else 0
    written = []
    for n, meta in enumerate(sorted(episodes, key=lambda m: m["episode_index"])):
        e = int(meta["episode_index"])
        rows = by_episode.get(e, [])
        if not rows:
            raise LeRobotFormatError(f"{root}: episode {e} has no rows in data/")
        timestamps = np.asarray([data["timestamp"][r] for r in rows], np.float64)
        if is_video:
            video = root / info["video_path"].format(video_key=camera, chunk_index=meta[f"videos/{camera}/chunk_index"],
                                                     file_index=meta[f"videos/{camera}/file_index"])
            rgb = decode_frames(video, timestamps + float(meta[f"videos/{camera}/from_timestamp"]), fps)
        else:
            rgb = image_frames(root, [data[camera][r] for r in rows])
        action = np.asarray([data["action"][r] for r in rows], np.float64)
        actions = np.zeros((len(rows), 3), np.float32)
        actions[:, 0], actions[:, 1] = action[:, columns[0]], action[:, columns[1]]
        if len(columns) == 3:
            actions[:, 2] = action[:, columns[2]] / (180.0 / math.pi)  # LeKiwi's deg/s -> rad/s
        task = tasks.get(int(data["task_index"][rows[0]]), "")
        if len(task.encode()) > 256:
            raise LeRobotFormatError(f"{root}: episode {e}'s task is {len(task.encode())} bytes; the episode format "
                                     f"stores at most 256 (S256): {task[:60]!r}...")
        attrs = json.loads(meta.get(ATTRS_COLUMN) or "{}")
        flags = [bool(data[INTERVENTION][r]) for r in rows] if INTERVENTION in data else [False] * len(rows)
        times = [float(data[CAPTURE_TIME][r]) for r in rows] if CAPTURE_TIME in data else list(timestamps)
        if EVENT in data:
            events = [EVENT_NAMES[int(data[EVENT][r])] for r in rows]
        else:
            events = ["episode_start"] + ["stop_action" if not np.any(a) else "start_action" for a in actions[1:]]
        kept = {key: value for key, value in attrs.items() if key not in WRITER_ATTRS}
        kept.setdefault("frame_spacing_s", 1.0 / fps)
        kept.setdefault("recording_mode", "continuous")
        kept["lerobot_source"] = f"{root.name} episode {e}"
        when = dt.datetime.fromisoformat(attrs["collection_datetime"]) if "collection_datetime" in attrs else None
        path = out / EPISODE_NAME.format(k)
        writer = EpisodeWriter(path, task or None, attrs=kept, compression=spec.compression, when=when,
                               layout=str(attrs.get("obstacle_layout_type", "lerobot")),
                               action_chunk_size=int(attrs.get("action_chunk_size", 8)), flush_each_frame=False)
        with writer:
            for i in range(len(rows)):
                event = events[i] if events[i] in EVENT_TYPES else "start_action"
                writer.append(np.ascontiguousarray(rgb[i][..., ::-1]), actions[i], times[i], event, flags[i])
            written.append(writer.finish())
        k += 1
        if progress:
            progress(n + 1, len(episodes))
    log.info("%s: %d episode(s) from %s (%s, action %s)", out, len(written), root, camera, ",".join(spec.action_keys))
    return written
