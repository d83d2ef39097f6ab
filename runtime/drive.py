"""The robot's main job: camera -> policy -> safety -> motor controller.

    python -m runtime.drive --bundle bundle/ --serial /dev/ttyUSB0 --camera csi
    python -m runtime.drive --bundle bundle/ --dry-run --camera episode.h5 --max-steps 18
    python -m runtime.drive --bundle bundle/ --motor ros2 --cmd-vel-stamped --camera ros2:/camera/image_raw
    python -m runtime.drive --bundle bundle/ --motor mypackage.base:MyBase --camera csi   # docs/motors.md
    python -m runtime.drive --bundle bundle/ --serial /tmp/mobile-vla-motor --camera 0 --mode step
    python -m sim.drive --bundle bundle/ --seed 3 --mode step --dead-zone 0.1 --max-steps 30   # the simulated robot

Two threads. The inference thread reads the newest camera frame, runs the
policy (preprocess -> vision -> language -> ring -> head) and publishes the
action with the time it arrived. The control thread (this one) runs at
`--rate` Hz and alone talks to the motor controller: it sends the action
through the safety gate while it is fresh, and zero when the frame it was
computed from is older than `--cmd-timeout` (ages count from capture:
inference or camera stalled), when the camera stalled, on NaN/inf, on any
exception, on SIGINT/SIGTERM/SIGHUP/SIGQUIT and at exit. In step mode a move
starts only from a frame younger than `--cmd-timeout` and then runs its
`--step-duration`, as the demonstrations' moves did. So a hung model or camera can
never leave the motors running, and the controller's own watchdog covers a
hung host.

No plan outlives a fault: every camera stall, non-finite action, command
timeout (inference stalled), motor link loss or reconnect, disarm and new
instruction resets the behaviours and the ring of features (a new
episode) before the next frame, and an action carries the capture time of
the frame it was planned from (an open-loop chunk's tail is as old as the
chunk's frame), so the watchdog judges the plan, not the newest frame. A
plan that would be older than `--cmd-timeout` is dropped and made again.
`--async` (runtime/policy/async_chunks.py) is held to the same: a reset forgets
the chunks at once (one from a frame captured before it is dropped when it
lands, none is blended into a new one), an inference whose frame is older
than `--cmd-timeout` zeroes as a stalled one does, and a chunk, a plan
meant to run ahead of its frame, is played only while its frame is younger
than the schedule's replan age (one action period by default) plus
`--cmd-timeout`.

What the robot is doing and why is on the status line from the first tick
(`driving`, `zero: camera stale`, `link down`, `disarmed`, ...) with the
link's counters (missed acks, refusals, reconnects, failed publishes), and
every change of state is a logged event. A motor link down for longer than
`--give-up-after` (5 s) ends the run with a message instead of resuming by
itself when the cable comes back, unless `--auto-resume`.

One motion authority decides what may move the robot
(runtime/control/authority.py, docs/reliability.md): `--start-disarmed` (the
systemd unit's default) sends zeros until armed (a key, a gamepad button, a
GPIO line, the ROS 2 service ~/arm); without it the drive arms itself once
the pre-arm checks pass (e-stop inputs released, motor link verified, camera
fresh, policy warmed). An e-stop latches zero until it is reset (its own key,
button or service) and the robot armed again; an arm or e-stop source that is
lost or silent disarms or latches the e-stop. Signal handlers
are installed before anything is opened, so a SIGTERM during start-up
still releases what was opened. `--base diff` maps a lateral intent for a
differential base (runtime/control/safety.py). ROS 2 arguments pass through after
`--ros-args`; with any ROS part the drive also serves /diagnostics, its arm
and e-stop services and an instruction topic (runtime/control/ros2.py).

Modes: `continuous` sends the newest action at the control rate; `step`
moves for `--step-duration` (0.4 s) per action, then stops and takes the
next frame, which is how the demonstrations were recorded.

The simulated robot is driven by `python -m sim.drive`, which hands this
module's `drive()` a simulated camera and motor: nothing here imports the
simulator.

As a library: `drive(DriveSpec(policy=PolicySpec(bundle), motor=MotorSpec(serial=port)))`;
each part of the spec (policy, motor, camera, loop, safety) owns its defaults,
and `build_parser()` reads them from there.
"""

from __future__ import annotations

import logging
import sys

from runtime.cli import exits_on
from runtime.control.session import build_parser, drive, spec_from_args
from runtime.logs import setup_logging
from runtime.policy.bundle import BundleError
from runtime.ros2.node import set_ros_args, split_ros_args

log = logging.getLogger(__name__)


@exits_on()  # CommandError: an option combination refused after parsing (--record without --teleop)
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--sim" in argv:  # moved in 0.2; this message goes in the release after
        print("error: --sim moved to its own entry: python -m sim.drive --bundle B --seed S ... "
              "(same options, --sim-seed is --seed, --sim-layout is --layout)", file=sys.stderr)
        return 2
    argv, ros_args = split_ros_args(argv)  # `--ros-args ...` as ROS tools take it (ros2 run, launch files)
    args = build_parser(__doc__).parse_args(argv)
    setup_logging(args.log_level)
    set_ros_args(ros_args)
    try:
        spec = spec_from_args(args)
    except BundleError as e:
        log.error("%s", e)
        return 1
    return drive(spec)


if __name__ == "__main__":
    sys.exit(main())
