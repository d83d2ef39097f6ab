"""train.data view: a recording on Rerun's timeline (read back with Rerun's own RrdReader), and as an MP4."""

import numpy as np
import pytest

from tests.conftest import run_python
from tests.helpers.rrd import column, rrd_entities


def test_a_recorded_episode_viewed_as_rrd_has_its_frames_actions_and_instruction_on_the_timeline(sim_recording,
                                                                                                  tmp_path):
    pytest.importorskip("rerun")
    import cv2

    from runtime.recording.episodes import read_episode_record

    record = read_episode_record(sim_recording)
    out = tmp_path / "view.rrd"
    proc = run_python("-m", "train.data", "view", str(sim_recording), "--save", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"{out}: 1 episode(s)" in proc.stdout
    entities = rrd_entities(out)
    frames = len(record.images)
    images = column(entities["/camera/image"], "EncodedImage:blob", by="frame")
    assert len(images) == frames >= 5
    first = cv2.imdecode(np.frombuffer(bytes(images[0][0]), np.uint8), cv2.IMREAD_COLOR)
    last = cv2.imdecode(np.frombuffer(bytes(images[-1][0]), np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(first.astype(int) - record.images[0]).mean() < 4  # the recorded frame (JPEG quality 90)
    assert np.abs(last.astype(int) - record.images[-1]).mean() < 4
    assert np.abs(last.astype(int) - record.images[0]).mean() > 8  # ... and not another one
    for axis, name in enumerate(("linear_x", "linear_y", "angular_z")):
        logged = [v[0] for v in column(entities[f"/action/{name}"], "Scalars:scalars", by="frame")]
        assert logged == pytest.approx(record.actions[:, axis].tolist(), abs=1e-6)
    assert column(entities["/instruction"], "TextDocument:text", by="frame") == [[record.instruction]]
    # one step of the timeline per frame, at its capture time (Rerun's durations are nanoseconds)
    assert column(entities["/camera/image"], "frame", by="frame") == list(range(frames))
    seconds = [t / 1e9 for t in column(entities["/camera/image"], "time", by="frame")]
    assert seconds == pytest.approx(record.times().tolist(), abs=1e-6)  # at their capture times
    arrows = column(entities["/camera/image/action"], "Arrows2D:vectors", by="frame")
    moving = int(np.argmax(np.abs(record.actions[:, 0]) > 0))
    assert arrows[moving][0][1] == pytest.approx(-0.4 * 144 * record.actions[moving, 0]
                                                 / np.abs(record.actions[:, :2]).max(), rel=1e-4)  # forward is up


def test_a_folder_is_one_timeline_with_episode_markers_and_take_over_segments(sim_recording, tmp_path, figure_dir):
    pytest.importorskip("rerun")
    import shutil

    from tests.fixtures.episodes import takeover_episode
    from train.data_view import ViewSpec, view

    folder = tmp_path / "rec"
    folder.mkdir()
    shutil.copy(sim_recording, folder / "episode_0000.h5")
    _, _, _, flags, times = takeover_episode(folder / "episode_0001.h5")
    out = view(ViewSpec(folder, save=tmp_path / "all.rrd"))
    assert out["episodes"] == 2
    entities = rrd_entities(out["rrd"])
    first = out["frames"] - len(flags)
    assert column(entities["/camera/image"], "frame", by="frame") == list(range(out["frames"]))
    taken = [v[0] for v in column(entities["/takeover"], "Scalars:scalars", by="frame")]  # the recorder's flags
    assert taken == [0.0] * first + flags.astype(float).tolist()
    events = [t[0] for t in column(entities["/events"], "TextLog:text", by="frame")]
    assert events[0].startswith("episode_0000.h5 begins") and events[-1].startswith("episode_0001.h5 ends")
    assert sum(e.startswith("take-over begins") for e in events) == 1
    assert sum(e.startswith("take-over ends") for e in events) == 1
    assert [v[0] for v in column(entities["/episode"], "Scalars:scalars", by="frame")] == [0.0, 1.0]
    seconds = np.asarray(column(entities["/camera/image"], "time", by="frame")) / 1e9
    assert np.all(np.diff(seconds) > 0)  # the second episode after the first, at its own capture spacing
    assert np.diff(seconds[first:]) == pytest.approx(np.diff(times), abs=1e-6)
    from plotting.rrd_figure import draw  # the view as a picture, from this file (docs/recording.md shows it)

    picture = draw(out["rrd"], first + 4, figure_dir / "recording-view.png",
                   "python -m train.data view rec/ --save rec.rrd: a recording, then a take-over run (frame 4 of it)")
    assert picture.stat().st_size > 20_000


def test_without_a_display_the_view_is_written_next_to_the_episode(sim_recording, tmp_path, monkeypatch):
    pytest.importorskip("rerun")
    import shutil

    from train.data_view import ViewSpec, view

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    episode = shutil.copy(sim_recording, tmp_path / "ep.h5")
    out = view(ViewSpec(episode))
    assert out["rrd"] == str(tmp_path / "ep.rrd") and (tmp_path / "ep.rrd").stat().st_size > 1000
    assert not list(tmp_path.glob(".*.partial"))


def test_the_mp4_holds_every_frame_at_the_recorded_spacing_with_the_action_drawn(sim_recording, tmp_path):
    pytest.importorskip("av")
    from plotting.video import read_mp4
    from runtime.recording.episodes import read_episode_record
    from train.data_view import ViewSpec, view

    record = read_episode_record(sim_recording)
    out = view(ViewSpec(sim_recording, mp4=tmp_path / "ep.mp4"))
    assert out["rrd"] is None and out["mp4"] == str(tmp_path / "ep.mp4")  # --mp4 alone: no Rerun needed
    frames = read_mp4(tmp_path / "ep.mp4")
    assert frames.shape == record.images.shape
    import av

    with av.open(str(tmp_path / "ep.mp4")) as container:
        assert float(container.streams.video[0].average_rate) == pytest.approx(2.5)  # one frame per 0.4 s move
    moving = int(np.argmax(np.abs(record.actions[:, :2]).sum(1) > 0))
    diff = np.abs(frames[moving].astype(int) - record.images[moving]).sum(-1)
    h, w = diff.shape
    vx, vy = record.actions[moving, :2]
    scale = 0.4 * h / np.abs(record.actions[:, :2]).max()
    along = [(int(round(w / 2 - f * vy * scale)), int(round(h * 0.95 - f * vx * scale))) for f in (0.3, 0.45, 0.6)]
    assert min(diff[y, x] for x, y in along) > 60  # the arrow: forward is up, left is left
    assert np.median(diff) < 20  # elsewhere the frame itself, within H.264's error
