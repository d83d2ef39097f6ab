"""Short MP4s for people who do not use Rerun: frames with the action drawn on them.

    python -m train.data view rec/episode_0003.h5 --mp4 ep3.mp4
    python -m sim.evaluate --bundle bundle/ --episodes 50 --plot eval.png     # + eval-best.mp4, eval-worst.mp4

    frames = [annotate(image_bgr, action, top_speed=1.15, lines=["frame 3", "go left"]) for ...]
    write_mp4(Path("out.mp4"), frames, fps=2.5)

H.264 in an MP4 (yuv420p, the one every browser and player opens), written
with PyAV (`av`, in the `datasets` extra) to a hidden name and renamed when
complete. Frames are BGR, as the episodes store them; odd sizes are padded by
one pixel (yuv420p needs even sides). PyAV and OpenCV are imported when a
video is made.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

CODECS = ("libx264", "h264", "libopenh264", "mpeg4")  # the first one PyAV's FFmpeg can encode is used


class VideoUnavailable(RuntimeError):
    """PyAV is not installed or has no usable encoder; the message says what to do."""


def import_av():
    try:
        import av  # noqa: PLC0415  PyAV: optional (the datasets extra), loaded only when a video is written
    except ImportError as e:
        raise VideoUnavailable("MP4s need PyAV: pip install -e '.[datasets]' (or pip install av)") from e
    return av


def h264_codec(av) -> str:
    """The first encoder of CODECS that this PyAV's FFmpeg has."""
    for name in CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001  an encoder missing from this FFmpeg build: try the next
            continue
    raise VideoUnavailable(f"PyAV {av.__version__}: none of the encoders {', '.join(CODECS)} is available")


def annotate(image_bgr: np.ndarray, action, top_speed: float = 1.0, lines: list[str] = (),
             color=(0, 200, 0)) -> np.ndarray:
    """A copy of the frame with the action as an arrow from the bottom centre (up is forward, left is left;
    `top_speed` spans 40 % of the height), its values, and `lines` of text at the top."""
    import cv2  # noqa: PLC0415  OpenCV: the drawing, loaded only when a video is made

    out = np.ascontiguousarray(image_bgr, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    vx, vy = float(action[0]), float(action[1])
    wz = float(action[2]) if len(action) > 2 else 0.0
    scale = 0.4 * h / max(top_speed, 1e-6)
    start = (w // 2, int(h * 0.95))
    end = (int(round(start[0] - vy * scale)), int(round(start[1] - vx * scale)))
    thick = max(1, h // 120)
    font = max(0.35, h / 480)
    if start != end:
        cv2.arrowedLine(out, start, end, (0, 0, 0), thick + 2, cv2.LINE_AA, tipLength=0.25)
        cv2.arrowedLine(out, start, end, color, thick, cv2.LINE_AA, tipLength=0.25)
    else:
        cv2.circle(out, start, 3 * thick, color, thick, cv2.LINE_AA)
    text = [*lines, f"x {vx:+.2f}  y {vy:+.2f}  wz {wz:+.2f}"]
    for i, line in enumerate(text):
        y = int((i + 1) * 22 * font) + 4
        cv2.putText(out, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, font * 0.5, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(out, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, font * 0.5, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def write_mp4(path: Path, frames, fps: float, crf: int = 23) -> Path:
    """BGR frames (all of one size) as an H.264 MP4 at `fps`; written to a hidden name, renamed when complete."""
    av = import_av()
    frames = list(frames)
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    h, w = frames[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2
    codec = h264_codec(av)
    rate = Fraction(fps).limit_denominator(1000)
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
            if codec in ("libx264", "h264"):
                stream.options = {"crf": str(crf)}
            for image in frames:
                if image.shape[:2] != (h, w):
                    raise ValueError(f"{path}: frames must share one size, found {image.shape[:2]} after {(h, w)}")
                if (ph, pw) != (h, w):
                    image = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_mp4(path: Path) -> np.ndarray:
    """(T, H, W, 3) uint8 BGR frames of a video (tests, checks)."""
    av = import_av()
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="bgr24") for f in container.decode(video=0)])
