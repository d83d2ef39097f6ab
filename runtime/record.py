"""Record demonstrations on the robot: a person drives by teleoperation, one HDF5 episode per demonstration.

    python -m runtime.record --out rec/ --teleop keyboard --serial /dev/ttyUSB0 --camera csi \\
        --instruction "Navigate around obstacles and reach the front of the beverage bottle on the left"
    python -m runtime.record --out rec/ --teleop joystick:/dev/input/js0 --mode continuous --rate 10 ...
    python -m runtime.record --out rec/ --teleop ros2-twist:/cmd_vel_teleop --motor ros2 --episode-seconds 20
    python -m runtime.record --out rec/ --resume ...          # continue the folder's numbering
    python -m sim.record --out rec/ --teleop keyboard --seed 3 # the simulated robot, same options

The camera and motor side are the drive's (`--camera`, `--serial`, `--motor`,
`--dry-run`, `--wheels`), and every command goes through the drive's safety
gate (`--max-speed`, `--max-accel`, `--dead-zone`): the person's top speed is
`--max-speed`. Motors end at zero on every exit, signal and error.

Modes (docs/recording.md, docs/episode-format.md):
- `step` (the original collector's): each move (a key press, a stick push)
  captures one frame, runs the move for `--step-duration` (0.4 s), then
  zero; the action stored is the command the motor side confirmed during the
  move (its last, after the safety gate's ramp).
- `continuous`: a frame every 1/`--rate` s while the person drives at the
  control rate; the action stored is the command in force at the frame's
  capture time.

Episodes: the start control or the first move starts one; the end control or
`--episode-seconds` ends it (saved); discard drops it and records that number
again; quit saves it and stops; `--episodes N` stops after N. Between episodes
a reset period (`--reset-seconds`, or until the start control) keeps the
motors at zero while the scene is reset. The instruction of episode k is
`--instruction` number k modulo their count (repeat the option for a list,
or `--instruction-file` one per line), or typed on the keyboard's terminal
after the start key (`--ask-instruction`). Each episode is written to a hidden
`.NAME.partial` file and renamed when it ends (runtime/recording/episode_writer.py): a
crash or a kill leaves every finished episode and the partial one.
"""


from __future__ import annotations

import sys

from runtime.cli import exits_on
from runtime.hardware import DeviceError, TeleopError
from runtime.logs import setup_logging
from runtime.recording.session import RecordSpec, build_parser, record


@exits_on(TeleopError, DeviceError)
def main(argv=None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    setup_logging(args.log_level)
    return record(RecordSpec.from_args(args))


if __name__ == "__main__":
    sys.exit(main())
