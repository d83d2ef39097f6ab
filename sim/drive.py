"""Drive the simulated robot with the robot's own drive loop.

    python -m sim.drive --bundle bundle/ --seed 3 --dead-zone 0.1          # mode and snapping: the bundle's
    python -m sim.drive --bundle bundle/ --seed 3 --mode continuous --no-discrete   # told otherwise
    python -m sim.drive --bundle bundle/ --layout room.json --max-steps 30 --log run.jsonl

`runtime.drive`'s loop, safety gate and serial driver, unchanged, handed two
simulated devices: the camera renders the simulated robot's view, and the
motor side is the controller emulator (sim/controller_emulator.py) on a
pseudo-terminal behind the real serial driver, moving the simulated robot.
So the wire path is the robot's, and only the world is simulated. The
instruction defaults to the room's ("... the beverage bottle on the
left/right"); a collision ends the run; how it ended is printed.

`--direct` skips the wire: the simulated motor (`sim.world.SimMotor`, a
`runtime.hardware.MotorController`) sets the robot's velocity itself.
Every option of `runtime.drive` applies, except the motor and camera choice.
`--mode`, `--discrete` / `--no-discrete` and `--step-duration` default to
the bundle's driving record (runtime/driving.py), as in `sim.evaluate`, so
the simulator drives the policy that was evaluated; the line logged at start
says which values are used and where they came from.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from runtime.bundle import Bundle, read_manifest
from runtime.cli import exits_on
from runtime.driving import DrivingSettings, driving_settings
from runtime.logs import add_log_level_argument, setup_logging
from runtime.drive import build_parser, drive
from sim.controller_emulator import ControllerEmulator
from sim.task import in_goal, instruction_for
from sim.world import Layout, SimMotor, SimRobot, SimWorld, load_layout, random_layout

log = logging.getLogger("sim.drive")  # not __main__ under python -m


class SimSession:
    """Everything `sim.drive` needs: a room, the controller emulator on a pseudo-terminal
    driving the simulated robot, and the robot's camera.

        with SimSession(random_layout(3)) as sim:
            ... SerialMotorController(sim.port) ..., camera = sim.camera
    """

    def __init__(self, layout: Layout, width: int = 256, height: int = 144, seed: int = 0):
        self.layout = layout
        self._dir = tempfile.TemporaryDirectory(prefix="mvla-sim-")
        self.emulator = ControllerEmulator(link=f"{self._dir.name}/motor")
        self.world = SimWorld(layout)
        self.camera = self.world.camera(width, height, seed)

    @property
    def port(self) -> str:
        return self.emulator.port

    def __enter__(self) -> "SimSession":
        self.emulator.start()
        self.world.attach(self.emulator)
        return self

    def __exit__(self, *exc) -> None:
        self.emulator.stop()
        self._dir.cleanup()

    @property
    def robot(self) -> SimRobot:
        return self.world.robot


def outcome(layout: Layout, robot: SimRobot) -> str:
    if robot.collided:
        return "collided"
    return "stopped in front of the bottle" if in_goal(layout, robot.pose) else "not at the bottle"


def build_sim_parser() -> argparse.ArgumentParser:
    """runtime.drive's options, the driving ones defaulting to None (= the bundle's record), and the room's."""
    ap = build_parser(description=__doc__)
    ap.set_defaults(mode=None, discrete=None, step_duration=None)
    for action in ap._actions:
        if action.dest in ("mode", "discrete", "step_duration"):
            action.help = f"{action.help or ''} (default: the bundle's driving record)".strip()
    try:
        ap.add_argument("--no-discrete", action="store_false", dest="discrete",
                        help="the head's raw actions (default: the bundle's driving record)")
    except argparse.ArgumentError:  # runtime.drive has it already
        pass
    try:
        add_log_level_argument(ap)
    except argparse.ArgumentError:  # runtime.drive has it already
        pass
    return ap


def bundle_driving(bundle: Path, mode: str | None, discrete: bool | None,
                   step_duration: float | None) -> DrivingSettings:
    """The bundle's driving record with what was asked on the command line (None: the record's)."""
    record = Bundle(Path(bundle), read_manifest(Path(bundle))).driving
    return driving_settings(record, mode=mode, discrete=discrete, step_duration=step_duration)


@exits_on(ValueError)
def main(argv=None) -> int:
    ap = build_sim_parser()
    ap.add_argument("--seed", type=int, default=0, help="the room (sim.world.random_layout(seed))")
    ap.add_argument("--layout", type=Path, help="a room saved as JSON (sim.world.save_layout)")
    ap.add_argument("--direct", action="store_true",
                    help="no wire: the simulated motor (sim.world.SimMotor) sets the robot's velocity itself")
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    settings = bundle_driving(args.bundle, args.mode, args.discrete, args.step_duration)
    args.mode, args.discrete, args.step_duration = settings.mode, settings.discrete, settings.step_duration
    log.info("driving %s: %s", args.bundle, settings.describe())
    layout = load_layout(args.layout) if args.layout else random_layout(args.seed)
    args.instruction = args.instruction or instruction_for(layout.side)
    width, height = args.width or 256, args.height or 144
    if args.direct:
        world = SimWorld(layout)
        code = drive(args, camera=world.camera(width, height, args.seed), motor=SimMotor(world))
        robot = world.robot
    else:
        with SimSession(layout, width, height, seed=args.seed) as sim:
            args.serial = sim.port
            code = drive(args, camera=sim.camera)
            robot = sim.robot
    x, y, _ = robot.pose
    print(f"sim: room {args.layout or f'seed {args.seed}'} ({layout.side}), robot at ({x:.2f}, {y:.2f}) "
          f"after {len(robot.path) - 1} updates: {outcome(layout, robot)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
