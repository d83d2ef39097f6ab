"""Drive the simulated robot with the robot's own drive loop.

    python -m sim.drive --bundle bundle/ --seed 3 --dead-zone 0.1          # mode and snapping: the bundle's
    python -m sim.drive --bundle bundle/ --seed 3 --mode continuous --no-discrete   # told otherwise
    python -m sim.drive --bundle bundle/ --layout room.json --max-steps 30 --log run.jsonl
    python -m sim.drive --bundle bundle/ --seed 7 --teleop expert --record runs/ --end-at-goal --time-limit 30

`runtime.drive`'s loop, safety gate and serial driver, unchanged, handed two
simulated devices: the camera renders the simulated robot's view, and the
motor side is the controller emulator (sim/controller_emulator.py) on a
pseudo-terminal behind the real serial driver, moving the simulated robot.
So the wire path is the robot's, and only the world is simulated. The
instruction defaults to the room's ("... the beverage bottle on the
left/right"); a collision ends the run; how it ended is printed.

`--direct` skips the wire: the simulated motor (`sim.world.SimMotor`, a
`runtime.hardware.MotorController`) sets the robot's velocity itself.
`--teleop expert` makes the scripted expert the person who takes over when
the robot leaves its safe set (sim/expert_person.py; with `--record DIR` the
run is recorded as `runtime.drive --teleop --record` records it: HG-DAgger's
corrections). `--end-at-goal` ends the run once the robot has stood still in
front of the bottle for a second, `--time-limit S` after S seconds; `--json
FILE` writes how it ended.
Every option of `runtime.drive` applies, except the motor and camera choice.
As there, `--mode`, `--discrete` / `--no-discrete` and `--step-duration`
default to the bundle's driving record (runtime/policy/driving.py), as in
`sim.evaluate`, so the simulator drives the policy that was evaluated; the
line logged at start says which values are used and where they came from.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from runtime.atomic import atomic_write_text
from runtime.cli import exits_on
from runtime.control.session import DriveSpec, build_parser, drive, spec_from_args
from runtime.hardware import Camera, EndOfStream
from runtime.logs import setup_logging
from sim.controller_emulator import ControllerEmulator
from sim.expert_person import ExpertPerson
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


class TaskCamera(Camera):
    """The simulated camera, whose stream ends when the task does: the robot stood still in front of the bottle for
    `settle_s` (`--end-at-goal`) or the run took `time_limit_s` (`--time-limit`); a collision ends it too."""

    name = "sim"

    def __init__(self, inner, world: SimWorld, end_at_goal: bool = False, time_limit_s: float | None = None,
                 settle_s: float = 1.0):
        self.inner, self.world, self.end_at_goal, self.time_limit_s = inner, world, end_at_goal, time_limit_s
        self.settle_s = settle_s
        self.started = time.monotonic()
        self._settled_since: float | None = None

    def read(self, timeout: float = 0.5):
        now = time.monotonic()
        if self.time_limit_s is not None and now - self.started >= self.time_limit_s:
            raise EndOfStream(f"time limit {self.time_limit_s:g} s")
        robot = self.world.robot
        if self.end_at_goal and in_goal(robot.layout, robot.pose) and not any(self.world.velocity):
            self._settled_since = self._settled_since or now
            if now - self._settled_since >= self.settle_s:
                raise EndOfStream("stopped in front of the bottle")
        else:
            self._settled_since = None
        return self.inner.read(timeout)

    def disconnect(self) -> None:
        self.inner.disconnect()


def with_expert(spec: DriveSpec, world: SimWorld) -> tuple[DriveSpec, ExpertPerson | None]:
    """`--teleop expert`: the scripted expert watching this world is the person who may take over."""
    if spec.takeover is None or spec.takeover.teleop != "expert":
        return spec, None
    person = ExpertPerson(world)
    return replace(spec, takeover=replace(spec.takeover, source=person)), person


def add_task_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--end-at-goal", action="store_true",
                    help="end the run once the robot has stood still in front of the bottle for a second")
    ap.add_argument("--time-limit", type=float, help="end the run after this many seconds")
    ap.add_argument("--json", type=Path, help="write how the run ended (outcome, pose, take-overs) here")


@exits_on(ValueError)
def main(argv=None) -> int:
    ap = build_parser(description=__doc__)
    add_task_arguments(ap)
    args, layout, (width, height) = parse_room_args(ap, argv)
    spec = spec_from_args(args)  # mode, snapping, move duration: the bundle's record unless given
    instruction = spec.policy.instruction or instruction_for(layout.side)
    spec = replace(spec, policy=replace(spec.policy, instruction=instruction))
    started = time.monotonic()
    if args.direct:
        world = SimWorld(layout)
        spec, person = with_expert(spec, world)
        camera = TaskCamera(world.camera(width, height, args.seed), world, args.end_at_goal, args.time_limit)
        code = drive(spec, camera=camera, motor=SimMotor(world))
        robot = world.robot
    else:
        with SimSession(layout, width, height, seed=args.seed) as sim:
            spec, person = with_expert(spec, sim.world)
            camera = TaskCamera(sim.camera, sim.world, args.end_at_goal, args.time_limit)
            code = drive(replace(spec, motor=replace(spec.motor, serial=sim.port)), camera=camera)
            robot = sim.robot
    x, y, _ = robot.pose
    ended = outcome(layout, robot)
    logging.getLogger("sim.drive").info(
        "sim: room %s (%s), robot at (%.2f, %.2f) after %d updates: %s", args.layout or f"seed {args.seed}",
        layout.side, x, y, len(robot.path) - 1, ended)
    if args.json is not None:
        result = {"room": str(args.layout or args.seed), "side": layout.side, "outcome": ended,
                  "success": ended == "stopped in front of the bottle", "collided": robot.collided,
                  "pose": [float(x), float(y)], "seconds": round(time.monotonic() - started, 2), "code": code,
                  "takeovers": None if person is None else len(person.takeovers),
                  "takeover_reasons": None if person is None else person.takeovers}
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
