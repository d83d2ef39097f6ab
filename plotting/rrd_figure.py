"""A still of a Rerun recording for the documents: what the viewer shows at one frame, drawn with matplotlib.

    python -m plotting.rrd_figure view.rrd --frame 6 --out docs/images/recording-view.png
    python -m plotting.rrd_figure eval.rrd --frame 14 --out docs/images/evaluation-view.png
    python -m plotting.rrd_figure out.rrd --frame 8 --out docs/images/drive-view.png       # runtime.drive --rerun

Rerun's own viewer needs a GPU surface that this project's headless machines
(CI, a build box) do not have, so the documents' pictures are drawn from the
same .rrd with matplotlib: the recording is read back with Rerun's own reader
(`rerun.chunk.RrdReader`), and the figure shows what the viewer's default
layout shows at that frame: `camera/image` with its `action` arrow, the
`action/*` (and `sent/*`, `takeover`) time series with the frame marked, the
`map/*` entities seen from above when the recording has them (a drive's
`plan/chunk` otherwise), a drive's `latency/*`, the `instruction` and the
`events` and `state` lines up to that frame. rerun-sdk and matplotlib
are imported when a figure is made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from plotting import pyplot


def read_rrd(path: Path) -> dict:
    """{entity: [(frame, {component: value})]} of a recording (the `frame` or `step` sequence, else row order)."""
    from rerun.chunk import RrdReader  # noqa: PLC0415  rerun-sdk: the rerun extra, loaded when a figure is made

    out: dict = {}
    for chunk in RrdReader(path).stream():
        batch = chunk.to_record_batch()
        names = batch.schema.names
        key = "frame" if "frame" in names else "step" if "step" in names else None
        index = batch.column(names.index(key)).to_pylist() if key else [None] * batch.num_rows
        comps = {n.split(":", 1)[1]: batch.column(i).to_pylist() for i, n in enumerate(names) if ":" in n
                 and not n.startswith("rerun.")}
        for row in range(batch.num_rows):
            out.setdefault(chunk.entity_path, []).append((index[row], {k: v[row] for k, v in comps.items()}))
    for rows in out.values():
        rows.sort(key=lambda r: -1 if r[0] is None else r[0])
    return out


def latest(rows: list, frame: int):
    """The newest row at or before `frame` (Rerun's latest-at), or None."""
    best = None
    for f, values in rows:
        if f is None or f <= frame:
            best = values
    return best


def series(rows: list) -> tuple[np.ndarray, np.ndarray]:
    pts = [(f, v["scalars"][0]) for f, v in rows if f is not None and v.get("scalars")]
    return (np.asarray([p[0] for p in pts]), np.asarray([p[1] for p in pts])) if pts else (np.zeros(0), np.zeros(0))


def draw(path: Path, frame: int, out: Path, title: str | None = None) -> Path:
    import cv2  # noqa: PLC0415  OpenCV: decoding the recording's JPEG frames

    plt = pyplot()
    if plt is None:
        raise RuntimeError("a figure needs matplotlib (pip install -e '.[bench]')")
    data = read_rrd(path)
    has_map = any(k.startswith("/map/") for k in data)
    third = has_map or "/plan/chunk" in data
    fig = plt.figure(figsize=(14, 6.2))
    grid = fig.add_gridspec(3, 3 if third else 2, width_ratios=[1.3, 1.1, 0.9] if third else [1.3, 1.2],
                            left=0.02, right=0.98, top=0.9, bottom=0.09, wspace=0.15, hspace=0.35)
    ax_img = fig.add_subplot(grid[:2, 0])
    image = latest(data.get("/camera/image", []), frame)
    if image is not None:
        bgr = cv2.imdecode(np.frombuffer(bytes(image["blob"][0]), np.uint8), cv2.IMREAD_COLOR)
        ax_img.imshow(bgr[..., ::-1])
        arrow = latest(data.get("/camera/image/action", []), frame)
        if arrow is not None:
            (ox, oy), (vx, vy) = arrow["origins"][0], arrow["vectors"][0]
            ax_img.annotate("", xy=(ox + vx, oy + vy), xytext=(ox, oy),
                            arrowprops=dict(color="lime", width=3, headwidth=10))
    ax_img.set_title(f"camera/image (frame {frame}) + action arrow", fontsize=9)
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    ax_txt = fig.add_subplot(grid[2, 0])
    ax_txt.set_axis_off()
    instruction = latest(data.get("/instruction", []), frame)
    lines = sorted(data.get("/events", []) + data.get("/state", []), key=lambda r: -1 if r[0] is None else r[0])
    events = [v["text"][0] for f, v in lines if f is None or f <= frame]
    shown = instruction["text"][0] if instruction else "-"
    text = [f"instruction: {shown}", "events:"] + [f"  {e}" for e in events[-6:]]
    text = [line if len(line) <= 78 else line[:75] + "..." for line in text]
    ax_txt.text(0, 1, "\n".join(text), va="top", fontsize=8, family="monospace", wrap=True)
    plots = [k for k in ("/action/linear_x", "/action/linear_y", "/action/angular_z", "/sent/linear_x",
                         "/sent/linear_y", "/sent/angular_z", "/takeover") if k in data]
    latencies = sorted(k for k in data if k.startswith("/latency/"))  # a drive's log (runtime.drive --rerun)
    ax_ts = fig.add_subplot(grid[:2, 1] if latencies else grid[:, 1])
    for k in plots:
        x, y = series(data[k])
        ax_ts.step(x, y, where="post", label=k.lstrip("/"), lw=1.2)
    ax_ts.axvline(frame, color="k", lw=1, ls="--")
    ax_ts.set_xlabel("step" if latencies else "frame")
    ax_ts.set_title("time series (dashed: the frame shown)", fontsize=9)
    ax_ts.legend(fontsize=7, loc="upper right")
    ax_ts.grid(alpha=0.3)
    if latencies:
        ax_lat = fig.add_subplot(grid[2, 1])
        for k in latencies:
            x, y = series(data[k])
            ax_lat.plot(x, y, label=k.removeprefix("/latency/"), lw=1)
        ax_lat.axvline(frame, color="k", lw=1, ls="--")
        ax_lat.set_ylabel("ms", fontsize=8)
        ax_lat.legend(fontsize=6, loc="upper right", ncol=4)
        ax_lat.grid(alpha=0.3)
    chunk = latest(data.get("/plan/chunk", []), frame)
    if chunk is not None and not has_map:  # the plan seen from above, where an evaluation shows its map
        ax_plan = fig.add_subplot(grid[:, 2])
        pts = np.asarray(chunk["strips"][0])
        ax_plan.plot(-pts[:, 1], pts[:, 0], "o-", color="tab:orange", ms=3)  # x forward (up), y left (left)
        ax_plan.plot(0, 0, "^", color="tab:blue", ms=10, label="robot")
        span = max(0.05, float(np.abs(pts).max()) * 1.2)
        ax_plan.set_xlim(-span, span)
        ax_plan.set_ylim(-span * 0.2, span)
        ax_plan.set_aspect("equal")
        ax_plan.set_title("plan/chunk: the chunk's path from above (m)", fontsize=9)
        ax_plan.legend(fontsize=7, loc="lower right")
        ax_plan.grid(alpha=0.3)
    if has_map:
        ax_map = fig.add_subplot(grid[:, 2])
        from matplotlib.patches import Rectangle  # noqa: PLC0415  matplotlib: imported with pyplot above

        room = latest(data["/map/room"], frame)
        (rx, ry), (rhx, rhy) = room["centers"][0], room["half_sizes"][0]
        ax_map.set_xlim(rx - rhx - 0.1, rx + rhx + 0.1)
        ax_map.set_ylim(ry - rhy - 0.1, ry + rhy + 0.1)
        for (cx, cy), (hx, hy), color in zip(room["centers"], room["half_sizes"], room.get("colors") or []):
            rgba = [(color >> s & 255) / 255 for s in (24, 16, 8)] if isinstance(color, int) else "0.3"
            ax_map.add_patch(Rectangle((cx - hx, cy - hy), 2 * hx, 2 * hy, fill=hx < 1.0, color=rgba, lw=1.5))
        goal = latest(data.get("/map/goal", []), frame)
        if goal:
            (cx, cy), (hx, hy) = goal["centers"][0], goal["half_sizes"][0]
            ax_map.add_patch(Rectangle((cx - hx, cy - hy), 2 * hx, 2 * hy, fill=False, color="green", ls=":"))
        for key, style in (("/map/expert", dict(color="green", ls="--", lw=1)), ("/map/policy",
                                                                                  dict(color="tab:blue", lw=2))):
            strip = latest(data.get(key, []), frame)
            if strip:
                pts = np.asarray(strip["strips"][0])
                ax_map.plot(pts[:, 0], pts[:, 1], label=key.lstrip("/"), **style)
        for key, color in (("/map/bottle", "green"), ("/map/robot", "tab:blue")):
            point = latest(data.get(key, []), frame)
            if point:
                ax_map.plot(*point["positions"][0], "o", color=color, ms=9, label=key.lstrip("/"))
        ax_map.set_aspect("equal")
        ax_map.invert_yaxis()  # Rerun's 2D view: y down
        ax_map.set_title("map (room from above)", fontsize=9)
        ax_map.legend(fontsize=7, loc="lower right")
        ax_map.set_xticks([])
        ax_map.set_yticks([])
    fig.suptitle(title or f"{Path(path).name}: the Rerun view at frame {frame} (drawn with matplotlib)", fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rrd", type=Path)
    ap.add_argument("--frame", type=int, default=0,
                    help="the `frame` timeline's value to show (a drive's log: its `step`)")
    ap.add_argument("--out", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--title")
    args = ap.parse_args(argv)
    print(draw(args.rrd, args.frame, args.out, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
