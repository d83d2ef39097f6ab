"""Record demonstrations on the simulated robot with the robot's own recorder (runtime/record.py).

    python -m sim.record --out rec/ --teleop keyboard --seed 3                       # drive it yourself, room 3
    python -m sim.record --out rec/ --teleop expert --episodes 20 --mode step        # 20 episodes, 20 rooms
    python -m sim.record --out rec/ --teleop expert --episodes 5 --seed 3            # 5 episodes, all in room 3
    python -m sim.record --out rec/ --teleop joystick:/dev/input/js0 --mode continuous --rate 10

The same options as `runtime.record`, except the camera and motor choice: the
camera renders the simulated robot's view (256x144 unless --width/--height),
and the motor side is the controller emulator on a pseudo-terminal behind the
real serial driver (`--direct`: the simulated motor without the wire). The
instruction defaults to the room's. `--teleop expert` is a scripted operator
(sim.task.ScriptedExpert, deciding from the true pose): one move per step to
the bottle, then it ends the episode, carries the robot back to the start
(the reset) and starts the next one.

Rooms: with `--episodes N` and neither `--seed` nor `--layout`, each episode
is recorded in a room of its own (seed = the episode's number, so the bottle
is on the left in some and on the right in others, each episode with its
room's instruction): what training needs. `--seed S` pins one room (seed S)
for every episode, `--layout room.json` a saved one; without `--episodes` (a
session you end yourself) the room is seed 0's unless given.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace

import numpy as np

from runtime.cli import exits_on
from runtime.hardware import ZERO, DeviceError, TeleopCommand, TeleopError, TeleopEvent, TeleopSource
from runtime.motors.select import MotorSpec
from runtime.recording.episode_writer import existing_episodes
from runtime.recording.session import RecordSpec, build_parser, record
from sim.drive import SimSession, parse_room_args
from sim.task import ScriptedExpert, in_goal, instruction_for
from sim.world import SimMotor, SimWorld, random_layout

log = logging.getLogger("sim.record")


class ExpertTeleop(TeleopSource):
    """The scripted operator as a teleop source: moves toward the bottle, `end` there, `start` after a reset."""

    name = "expert"

    def __init__(self, world: SimWorld):
        self.world = world
        self.expert = ScriptedExpert(world.robot.layout)
        self._ended = False
        self.episodes = 0
        self.reached = 0  # episodes that ended in front of the bottle

    def _fraction(self) -> tuple[float, float, float]:
        self.world.advance()
        return tuple(float(np.sign(v)) for v in self.expert(None, self.world.robot.pose))

    def poll(self, now: float) -> list[TeleopEvent]:
        if self._ended:  # the person carried the robot back to the start: next episode
            self.world.reset_robot()
            self._ended = False
            return [TeleopEvent("start", ZERO, now)]
        fraction = self._fraction()
        if not any(fraction) or self.world.robot.collided:
            self._ended = True
            self.episodes += 1
            self.reached += in_goal(self.world.robot.layout, self.world.robot.pose) and not self.world.robot.collided
            return [TeleopEvent("end", ZERO, now)]
        return [TeleopEvent("move", self.scale(fraction), now)]

    def command(self, now: float) -> TeleopCommand:
        return TeleopCommand(self.scale(self._fraction()), True)


@exits_on(ValueError, TeleopError, DeviceError)
def main(argv=None) -> int:
    args, layout, (width, height) = parse_room_args(
        build_parser(description=__doc__), argv, seed_default=None,
        seed_help="pins the room (sim.world.random_layout(seed)) for every episode; default: with --episodes, "
                  "each episode in a room of its own (seed = its number), else seed 0's")
    args.camera = "sim"  # stored on each episode
    if args.seed is None and args.layout is None and args.episodes:
        return record_in_rooms(args, width, height)
    args.instruction = args.instruction or [instruction_for(layout.side)]
    spec = RecordSpec.from_args(args)
    return record_in_room(args, layout, spec, width, height)


def record_in_rooms(args, width: int, height: int) -> int:
    """--episodes N without --seed: episode k in room k (its own seed, its own instruction), one after another
    into the same folder (numbering continues: the later ones --resume)."""
    given = args.instruction
    first = len(existing_episodes(args.out)) if args.resume else 0
    for k in range(args.episodes):
        seed = first + k
        layout = random_layout(seed)
        args.instruction = given or [instruction_for(layout.side)]
        spec = RecordSpec.from_args(args)
        spec = replace(spec, config=replace(spec.config, episodes=1, resume=spec.config.resume or k > 0))
        log.info("sim: episode %d of %d in room %d (bottle on the %s)", k + 1, args.episodes, seed, layout.side)
        code = record_in_room(args, layout, spec, width, height, seed=seed)
        if code != 0:
            return code
    return 0


def record_in_room(args, layout, spec: RecordSpec, width: int, height: int, seed: int | None = None) -> int:
    seed = (args.seed or 0) if seed is None else seed

    def run(world: SimWorld, camera, spec: RecordSpec, motor=None) -> int:
        teleop = ExpertTeleop(world).open(spec.safety.max_speed) if spec.teleop == "expert" else None
        code = record(spec, camera=camera, motor=motor, teleop=teleop)
        if teleop is not None:
            log.info("sim: the scripted operator ended %d episode(s), %d in front of the bottle", teleop.episodes,
                     teleop.reached)
        return code

    if args.direct:
        world = SimWorld(layout)
        return run(world, world.camera(width, height, seed), spec, SimMotor(world))
    with SimSession(layout, width, height, seed=seed) as sim:
        return run(sim.world, sim.camera, replace(spec, motor=MotorSpec(serial=sim.port)))


if __name__ == "__main__":
    sys.exit(main())
