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
As there, `--mode`, `--discrete` / `--no-discrete` and `--step-duration`
default to the bundle's driving record (runtime/policy/driving.py), as in
`sim.evaluate`, so the simulator drives the policy that was evaluated; the
line logged at start says which values are used and where they came from.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from runtime.cli import exits_on
from runtime.control.session import build_parser, drive, spec_from_args
from runtime.logs import setup_logging
from sim.controller_emulator import ControllerEmulator
from sim.task import in_goal, instruction_for
from sim.world import Layout, SimMotor, SimRobot, SimWorld, load_layout, random_layout

CAMERA_SIZE = (256, 144)  # the simulated camera's (width, height) unless --width / --height are given


def parse_room_args(ap: argparse.ArgumentParser, argv=None, seed_help: str = "the room (sim.world.random_layout(seed))",
                    seed_default: int | None = 0) -> tuple[argparse.Namespace, Layout, tuple[int, int]]:
    """The start sim.drive and sim.record share: the room options (--seed, --layout, --direct) added to the
    robot command's parser, `argv` parsed, logging set up. Returns the arguments, the room they name (seed 0's
    when --seed is left at a None default) and the camera's (width, height)."""
    ap.add_argument("--seed", type=int, default=seed_default, help=seed_help)
    ap.add_argument("--layout", type=Path, help="a room saved as JSON (sim.world.save_layout)")
    ap.add_argument("--direct", action="store_true",
                    help="no wire: the simulated motor (sim.world.SimMotor) sets the robot's velocity itself")
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    layout = load_layout(args.layout) if args.layout else random_layout(args.seed or 0)
    return args, layout, (args.width or CAMERA_SIZE[0], args.height or CAMERA_SIZE[1])


class SimSession:
    """Everything `sim.drive` needs: a room, the controller emulator on a pseudo-terminal
    driving the simulated robot, and the robot's camera.

        with SimSession(random_layout(3)) as sim:
            ... SerialMotorController(sim.port) ..., camera = sim.camera
    """

    def __init__(self, layout: Layout, width: int = CAMERA_SIZE[0], height: int = CAMERA_SIZE[1], seed: int = 0):
        self.layout = layout
        self._dir = tempfile.TemporaryDirectory(prefix="mvla-sim-")
        self.emulator = ControllerEmulator(link=f"{self._dir.name}/motor")
        self.world = SimWorld(layout)
        self.camera = self.world.camera(width, height, seed)

    @property
    def port(self) -> str:
        return self.emulator.port

    def __enter__(self) -> SimSession:
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


@exits_on(ValueError)
def main(argv=None) -> int:
    args, layout, (width, height) = parse_room_args(build_parser(description=__doc__), argv)
    spec = spec_from_args(args)  # mode, snapping, move duration: the bundle's record unless given
    instruction = spec.policy.instruction or instruction_for(layout.side)
    spec = replace(spec, policy=replace(spec.policy, instruction=instruction))
    if args.direct:
        world = SimWorld(layout)
        code = drive(spec, camera=world.camera(width, height, args.seed), motor=SimMotor(world))
        robot = world.robot
    else:
        with SimSession(layout, width, height, seed=args.seed) as sim:
            code = drive(replace(spec, motor=replace(spec.motor, serial=sim.port)), camera=sim.camera)
            robot = sim.robot
    x, y, _ = robot.pose
    logging.getLogger("sim.drive").info(
        "sim: room %s (%s), robot at (%.2f, %.2f) after %d updates: %s", args.layout or f"seed {args.seed}",
        layout.side, x, y, len(robot.path) - 1, outcome(layout, robot))
    return code


if __name__ == "__main__":
    sys.exit(main())
