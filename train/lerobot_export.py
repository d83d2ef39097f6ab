"""Our episodes as a LeRobot dataset (format v3.0): parquet, one MP4 per camera and episode, meta/info.json, stats.

    python -m train.data export-lerobot rec/ --out lerobot-rec/ --repo-id me/mobile-vla-room1
    python -m train.data export-lerobot rec/ --out lerobot-rec/ --vcodec h264 --crf 18

    from train.lerobot_export import ExportSpec, export_lerobot
    report = export_lerobot(ExportSpec(Path("rec"), Path("lerobot-rec")))

Written with pyarrow and PyAV only (the `datasets` extra); the `lerobot`
package is not needed to write, and `LeRobotDataset("me/...", root="lerobot-rec")`
loads the result (tests/train/test_lerobot_interop.py runs the real one).

- the camera is `observation.images.front` (LeKiwi's base camera), RGB, one
  MP4 per episode (`--vcodec libsvtav1`, LeRobot's own default, CRF 30, a
  key frame every 2 frames, yuv420p; or `h264`); the frames come back within
  the codec's error, not bit for bit (docs/recording.md states it);
- `action` is LeKiwi's base velocity `[x.vel, y.vel, theta.vel]` (m/s, m/s,
  deg/s): linear_x, linear_y as they are, angular_z from rad/s to deg/s;
- the instruction is the frame's task; `intervention` (bool),
  `capture_time` (s from the episode's first frame) and `action_event`
  (index into episode_start, start_action, stop_action) are extra features;
  every attribute of the episode file goes into `mobile_vla/attrs` (JSON) of
  the episode's row in meta/episodes;
- `fps` is 1 / the recordings' frame spacing (2.5 for step-mode recordings,
  one frame per 0.4 s move; a float where it is not whole): spacings within
  training's 10 % are one, their median, and a measured rate within 2 % of a
  whole number is that number (0.0998 s: 10); timestamps are
  frame_index / fps, the real capture times stay in `capture_time`.

The folder appears complete or not at all (written beside it, then renamed).
Pushing it to the hub is LeRobot's own call (docs/recording.md):
`LeRobotDataset(REPO_ID, root=DIR).push_to_hub()`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from runtime.atomic import atomic_directory
from runtime.policy.driving import same_spacing
from runtime.recording.episodes import EpisodeRecord, read_episode_record
from train.lerobot_layout import (
    ATTRS_COLUMN,
    BASE_KEYS,
    CAMERA,
    CAPTURE_TIME,
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_FILES_SIZE_IN_MB,
    DATA_PATH,
    DEFAULT_FEATURES,
    DEG_PER_RAD,
    EPISODES_PATH,
    EVENT,
    EVENT_NAMES,
    INFO_PATH,
    INTERVENTION,
    QUANTILES,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_FILES_SIZE_IN_MB,
    VIDEO_PATH,
    LeRobotFormatError,
)

log = logging.getLogger(__name__)
FPS_SNAP = 0.02  # a measured rate within 2 % of a whole number is that number (dataset_fps)
VCODECS = ("libsvtav1", "h264")  # LeRobot's default (AV1) and the one every decoder has


@dataclass(frozen=True)
class ExportSpec:
    episodes: Path  # a folder of our .h5 episodes (read recursively)
    out: Path  # the dataset folder to write (must not exist unless overwrite)
    repo_id: str = "local/mobile-vla"  # the hub name it will be pushed under (printed with the push command)
    vcodec: str = "libsvtav1"  # LeRobot's default encoder (AV1); "h264" for players without AV1
    crf: int = 30  # LeRobot's default quality (lower is closer to the frames, larger files)
    gop: int = 2  # frames between key frames (LeRobot's g=2: fast random access for training)
    robot_type: str = "mobile_vla_omni"  # info.json's robot_type
    overwrite: bool = False  # replace an existing --out folder


def episode_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: episode folder not found")
    paths = sorted(p for p in folder.rglob("*") if p.suffix in (".h5", ".hdf5"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no .h5 episodes found")
    return paths


def common_spacing(records: list[EpisodeRecord]) -> float:
    """The one frame spacing of the episodes (the recorder's attribute, else the collector's 0.4 s): spacings that
    agree as training's do (runtime.policy.driving.same_spacing: within 10 %; a continuous recording stores its
    measured spacing, 0.0998 s or 0.1003 s) are one, their median."""
    spacings = sorted(r.frame_spacing_s for r in records)
    if not same_spacing(spacings[0], spacings[-1]):
        shown = sorted({round(s, 4) for s in spacings})
        raise LeRobotFormatError(f"{records[0].path.parent}: episodes at different frame spacings "
                                 f"({', '.join(f'{s:g} s' for s in shown)}); a LeRobot dataset has one fps: "
                                 f"export each spacing to its own dataset (python -m train.data summary shows which)")
    return float(np.median(spacings))


def dataset_fps(spacing: float) -> float | int:
    """LeRobot's fps for a frame spacing: the whole number a measured spacing stands for when within 2 % of it
    (0.0998 s: 10), else the exact rate (0.4 s: 2.5)."""
    fps = 1.0 / spacing
    return int(round(fps)) if round(fps) and abs(fps - round(fps)) <= FPS_SNAP * fps else round(fps, 6)


def to_base_action(actions: np.ndarray) -> np.ndarray:
    """(T, 3) (linear_x m/s, linear_y m/s, angular_z rad/s) -> LeKiwi's (x.vel m/s, y.vel m/s, theta.vel deg/s)."""
    out = np.asarray(actions, np.float64).copy()
    out[:, 2] *= DEG_PER_RAD
    return out.astype(np.float32)


def feature_stats(values: np.ndarray) -> dict:
    """LeRobot's per-feature statistics over axis 0 (min, max, mean, std, count, q01..q99)."""
    x = np.asarray(values, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    stats = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for q in QUANTILES:
        stats[f"q{round(q * 100):02d}"] = np.quantile(x, q, axis=0)
    return {k: v.tolist() for k, v in stats.items()}


def sample_pixels(frame_rgb: np.ndarray, count: int = 22500) -> np.ndarray:
    """About `count` pixels (N, 3) of a frame, evenly spread (LeRobot's stats sample ~150x150 per image)."""
    flat = frame_rgb.reshape(-1, 3)
    return flat[:: max(1, len(flat) // count)]


def image_stats(pixels: list[np.ndarray]) -> dict:
    """Per-channel statistics of sampled RGB pixels scaled to [0, 1], shaped (3, 1, 1) as LeRobot writes them."""
    stats = feature_stats(np.concatenate(pixels).astype(np.float64) / 255.0)
    return {k: (v if k == "count" else [[[c]] for c in v]) for k, v in stats.items()}


def encode_episode_video(path: Path, frames_rgb: np.ndarray, fps: float, spec: ExportSpec) -> dict:
    """One episode's RGB frames as an MP4 (yuv420p); returns LeRobot's video info for info.json."""
    import av  # noqa: PLC0415  PyAV: the datasets extra, loaded when a dataset is written

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per video on stderr: errors only
    if spec.vcodec not in VCODECS:
        raise LeRobotFormatError(f"--vcodec {spec.vcodec}: expected one of {', '.join(VCODECS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames_rgb.shape[1:3]
    if h % 2 or w % 2:
        raise LeRobotFormatError(f"{path}: frames of {w}x{h}; yuv420p video needs even sides")
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(spec.vcodec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        options = {"g": str(spec.gop), "crf": str(spec.crf)}
        if spec.vcodec == "libsvtav1":
            options["preset"] = "12"  # LeRobot's: fast
        stream.options = options
        for image in frames_rgb:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        codec = stream.codec_context.codec.canonical_name if stream.codec_context.codec else spec.vcodec
    return {"video.height": h, "video.width": w, "video.codec": codec, "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}


def tasks_table(tasks: list[str]):
    """meta/tasks.parquet as pandas writes a DataFrame indexed by the task strings (LeRobot reads it with
    pandas and looks tasks up by that index), made with pyarrow alone."""
    import pyarrow as pa  # noqa: PLC0415  pyarrow: the datasets extra

    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                     "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    schema = pa.schema([("task_index", pa.int64()), ("__index_level_0__", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_meta).encode()})
    return pa.table({"task_index": list(range(len(tasks))), "__index_level_0__": tasks}, schema=schema)


def export_lerobot(spec: ExportSpec, progress=None) -> dict:
    """Write the dataset; returns {"root", "episodes", "frames", "fps", "tasks", "features"}."""
    import pyarrow as pa  # noqa: PLC0415  pyarrow: the datasets extra, loaded when a dataset is written
    import pyarrow.parquet as pq  # noqa: PLC0415  as above

    paths = episode_files(spec.episodes)
    records = [read_episode_record(p) for p in paths]
    fps = dataset_fps(common_spacing(records))
    shapes = {r.images.shape[1:] for r in records}
    if len(shapes) > 1:
        raise LeRobotFormatError(f"{spec.episodes}: frames of different sizes ({sorted(shapes)}); one camera "
                                 f"feature has one shape")
    h, w, _ = shapes.pop()
    tasks: list[str] = []
    columns: dict[str, list] = {k: [] for k in ("action", INTERVENTION, CAPTURE_TIME, EVENT, *DEFAULT_FEATURES)}
    episode_rows: list[dict] = []
    video_info: dict = {}
    sampled: list[np.ndarray] = []
    index = 0
    with atomic_directory(spec.out, overwrite=spec.overwrite) as tmp:
        for e, record in enumerate(records):
            task = record.instruction or ""
            if task not in tasks:
                tasks.append(task)
            t = len(record.images)
            rgb = np.ascontiguousarray(record.images[..., ::-1])
            chunk, file = divmod(e, CHUNKS_SIZE)
            video_rel = VIDEO_PATH.format(video_key=CAMERA, chunk_index=chunk, file_index=file)
            info = encode_episode_video(tmp / video_rel, rgb, fps, spec)
            video_info = video_info or info
            sampled.extend(sample_pixels(f) for f in rgb[:: max(1, t // 10)])
            columns["action"].extend(to_base_action(record.actions))
            flags = record.intervention if record.intervention is not None else np.zeros(t, bool)
            columns[INTERVENTION].extend(bool(v) for v in flags)
            columns[CAPTURE_TIME].extend(float(v) for v in record.times())
            columns[EVENT].extend(EVENT_NAMES.index(ev) if ev in EVENT_NAMES else 1 for ev in record.events)
            columns["timestamp"].extend(i / fps for i in range(t))
            columns["frame_index"].extend(range(t))
            columns["episode_index"].extend([e] * t)
            columns["index"].extend(range(index, index + t))
            columns["task_index"].extend([tasks.index(task)] * t)
            episode_rows.append({
                "episode_index": e, "tasks": [task], "length": t,
                "data/chunk_index": 0, "data/file_index": 0,
                "dataset_from_index": index, "dataset_to_index": index + t,
                f"videos/{CAMERA}/chunk_index": chunk, f"videos/{CAMERA}/file_index": file,
                f"videos/{CAMERA}/from_timestamp": 0.0, f"videos/{CAMERA}/to_timestamp": t / fps,
                "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                ATTRS_COLUMN: json.dumps({"source_file": record.path.name, **record.attrs}, default=str),
            })
            index += t
            if progress:
                progress(e + 1, len(records))

        data = pa.table({
            "action": pa.array([list(map(float, a)) for a in columns["action"]], pa.list_(pa.float32(), 3)),
            INTERVENTION: pa.array(columns[INTERVENTION], pa.bool_()),
            CAPTURE_TIME: pa.array(columns[CAPTURE_TIME], pa.float32()),
            EVENT: pa.array(columns[EVENT], pa.int64()),
            "timestamp": pa.array(columns["timestamp"], pa.float32()),
            **{k: pa.array(columns[k], pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")},
        })
        data_path = tmp / DATA_PATH.format(chunk_index=0, file_index=0)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, data_path, compression="snappy")
        episodes_path = tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(episode_rows), episodes_path, compression="snappy")
        pq.write_table(tasks_table(tasks), tmp / TASKS_PATH)

        features = {
            "action": {"dtype": "float32", "shape": [3], "names": list(BASE_KEYS)},
            CAMERA: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                     "info": video_info},
            INTERVENTION: {"dtype": "bool", "shape": [1], "names": None},
            CAPTURE_TIME: {"dtype": "float32", "shape": [1], "names": None},
            EVENT: {"dtype": "int64", "shape": [1], "names": list(EVENT_NAMES)},
            **DEFAULT_FEATURES,
        }
        frames = index
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": spec.robot_type, "total_episodes": len(records),
            "total_frames": frames, "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB, "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
            "fps": fps, "splits": {"train": f"0:{len(records)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
            "features": features,
        }
        (tmp / INFO_PATH).write_text(json.dumps(info, indent=4) + "\n")
        stats = {name: feature_stats(np.asarray(columns[name], np.float64))
                 for name in ("action", INTERVENTION, CAPTURE_TIME, EVENT, *DEFAULT_FEATURES)}
        stats[CAMERA] = image_stats(sampled)
        (tmp / STATS_PATH).write_text(json.dumps(stats, indent=4) + "\n")
    log.info("%s: %d episodes, %d frames at %s fps, %d task(s), %s video", spec.out, len(records), frames, fps,
             len(tasks), spec.vcodec)
    return {"root": str(spec.out), "episodes": len(records), "frames": frames, "fps": fps, "tasks": tasks,
            "repo_id": spec.repo_id, "features": sorted(features)}
