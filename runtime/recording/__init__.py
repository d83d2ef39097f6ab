"""recording/: demonstrations and corrections, written as the collector's HDF5 episodes.

What lives here
    episodes.py (the episode reader: both collectors' layouts), episode_writer.py (a hidden partial file renamed
    when the episode ends, never reopened; the numbering; frame compression; a full disk as an error),
    background_writer.py (a writer thread so the loop never waits on the disk: frames it cannot take are dropped and
    counted), command_history.py (the label a frame gets),
    episode_files.py (`EpisodeFiles`: a recording's episodes as files: the folder numbered, the open episode's
    frames labelled and handed to its writer, saved, discarded or kept partial, those being written out reaped, the
    free disk watched), recording_screen.py (`RecordingScreen`: what the person recording sees and types: the
    controls' legend, the status line, each episode's instruction asked), recorder.py (`Recorder`: the teleoperation
    recording loop), session.py (`RecordSpec`, the recorder's options, `record()`: one recording assembled),
    takeover.py (a person takes over while the policy drives; the run recorded at the trained spacing, frames
    tagged; what the drive loop calls), rerun_log.py (`RerunLog`: what a drive saw and sent, logged to Rerun from a
    background thread behind a bounded buffer that the loop never waits on), rerun_episode.py (`EpisodeTimeline`:
    recorded or simulated episodes on one Rerun timeline, for train.data view and sim.evaluate --rerun).

What it may import
    numpy, h5py (lazily on the robot), rerun-sdk (lazily, when a Rerun log or view is opened), policy/ (the
    default instruction), control/ (the safety gate, signals, the drive's defaults), runtime.hardware, and from
    cameras/, motors/ and teleop/ only their openers (`select.py`) (tests/test_architecture.py checks it).

How to add one more
    A new episode attribute or dataset: write it in episode_writer.py, read it in episodes.py and
    train/data.py, and say it in docs/episode-format.md; copy tests/runtime/recording/test_episode_writer.py.
    A new recording mode: a tick method in `Recorder` beside `_step_tick` and `_continuous_tick`; copy
    tests/runtime/recording/test_recorder.py (a real serial controller on a pseudo-terminal, a replayed camera).
"""
