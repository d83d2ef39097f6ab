"""Write episodes in the robot collector's HDF5 layout: the robot's own writer (runtime/recording/episode_writer.py).

    from sim.episodes import write_episode
    write_episode(Path("ep.h5"), images_bgr, actions, instruction="go to the bottle on the left")

The synthetic demonstrations and the tests write exactly what the robot's
recorder (`python -m runtime.record`) writes; the layout is
docs/episode-format.md.
"""

from runtime.recording.episode_writer import EpisodeWriter, write_episode

__all__ = ["EpisodeWriter", "write_episode"]
