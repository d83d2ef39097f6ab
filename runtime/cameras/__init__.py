"""cameras/: where frames come from, each stamped with its capture time.

What lives here
    live.py (OpenCV devices, the Jetson CSI camera, any GStreamer pipeline), replay.py (a video, an image folder,
    an HDF5 episode, one frame per read), ros2.py + ros2_images.py (a ROS 2 image topic), sample_frames.py
    (camera-like test frames for checks and benchmarks), select.py (`CameraSpec`, `--camera`, `open_camera`:
    the one place a source name becomes a camera).

What it may import
    numpy, OpenCV, runtime.hardware (the `Camera` seam and its errors), runtime.ros2 (the shared node, for
    ros2.py) and runtime.recording.episodes (the episode reader, for the replay). Never policy/, control/,
    motors/ or teleop/ (tests/test_architecture.py checks it).

How to add one more (say, a RealSense camera)
    1. realsense.py: a class subclassing `runtime.hardware.Camera` with `connect`, `read(timeout) -> Frame`
       (the newest frame not read before, `stamp` = time.monotonic() at capture; raise `CameraStalled` when none
       arrives within `timeout`, `FrameTooOld` when the newest is older than its max age) and `disconnect`;
       import the vendor package inside the class, so robots without it still start.
    2. select.py: one branch in `open_camera` for its source name (e.g. `realsense:SERIAL`), and the `--camera`
       help text.
    3. tests/runtime/cameras/test_realsense.py: copy tests/runtime/cameras/test_live.py (a source that stalls,
       goes stale and comes back); nothing in control/ changes.
"""
