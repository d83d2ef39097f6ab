"""One recording, assembled: the person's device, the camera and the motor side a `RecordSpec` names are
opened through their rooms' openers, handed to the recording loop, and released with the motors at zero.

    record(RecordSpec("keyboard", RecordConfig(out=Path("rec")), motor=MotorSpec(serial="/dev/ttyUSB0")))
    record(spec, camera=my_camera, motor=my_motor)            # the simulator hands in its own (sim/record.py)
    spec = RecordSpec.from_args(build_parser().parse_args(argv))   # what `python -m runtime.record` does

The camera and motor side are the drive's (`--camera`, `--serial`, `--motor`,
`--dry-run`, `--wheels`), and every command goes through the drive's safety
gate (`--max-speed`, `--max-accel`, `--dead-zone`): the person's top speed is
`--max-speed`. `--rerun` logs the frames recorded, the actions stored with
them and the commands sent to Rerun (runtime/recording/rerun_log.py).
"""

from __future__ import annotations

import argparse
import logging
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from runtime.cameras.select import CameraSpec, add_camera_arguments
from runtime.cli import CommandError, show_defaults
from runtime.control.config import DriveConfig
from runtime.control.safety import SafetyConfig, SafetyGate, add_safety_arguments
from runtime.control.signals import install_signal_handlers
from runtime.hardware import CameraError, DeviceError, TeleopError
from runtime.logs import add_log_level_argument
from runtime.motors.select import MotorSpec, add_motor_arguments, open_motor
from runtime.policy.prompt import DEFAULT_INSTRUCTION
from runtime.recording.episode_writer import frame_compression
from runtime.recording.recorder import RecordConfig, Recorder
from runtime.recording.rerun_log import RerunLog, RerunSpec, RerunUnavailable, add_rerun_arguments
from runtime.teleop.select import SOURCES, add_joy_map_argument, open_teleop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordSpec:
    """What `record()` needs: the person's device, the recording, and the drive's own camera, motor and safety."""

    teleop: str  # --teleop SOURCE (runtime.teleop.SOURCES)
    config: RecordConfig  # mode, rates, episodes, instructions, folder
    motor: MotorSpec = MotorSpec()  # the drive's motor side (ignored when record() is handed a motor)
    camera: CameraSpec = CameraSpec()  # the drive's camera (ignored when record() is handed a camera)
    safety: SafetyConfig = SafetyConfig()  # the drive's gate: --max-speed is the person's top speed
    cmd_timeout: float = DriveConfig.cmd_timeout  # s: the serial controller's own watchdog (the drive's)
    joy_map: str | None = None  # --joy-map: a gamepad's layout (runtime.teleop.select.GAMEPAD_MAPS or a JSON file)
    rerun: RerunSpec | None = None  # --rerun: the frames recorded and the commands sent, to Rerun; None: off

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RecordSpec:
        motor, camera = MotorSpec.from_args(args), CameraSpec.from_args(args)
        return cls(args.teleop, config_from(args, motor, camera), motor, camera, SafetyConfig.from_args(args),
                   args.cmd_timeout, args.joy_map, RerunSpec.from_args(args))


def add_record_arguments(ap: argparse.ArgumentParser) -> None:
    d = RecordConfig(out=Path("."))
    ap.add_argument("--out", type=Path, required=True, help="folder of episodes (episode_0000.h5, ...)")
    ap.add_argument("--teleop", required=True, help=f"the person's device: {SOURCES}")
    ap.add_argument("--mode", choices=("step", "continuous"), default=d.mode)
    ap.add_argument("--instruction", action="append",
                    help="the episode's instruction; repeat for a list (episode k gets number k modulo the count)")
    ap.add_argument("--instruction-file", type=Path, help="instructions, one per line (with or instead of "
                                                          "--instruction)")
    ap.add_argument("--ask-instruction", action="store_true",
                    help="--teleop keyboard: type each episode's instruction after the start key (n); Enter keeps "
                         "the proposed one")
    ap.add_argument("--episodes", type=int, help="stop after this many saved episodes")
    ap.add_argument("--episode-seconds", type=float, help="end (and save) each episode after this many seconds")
    ap.add_argument("--reset-seconds", type=float, default=d.reset_seconds,
                    help="pause between episodes with the motors at zero (the start control ends it early)")
    ap.add_argument("--rate", type=float, default=d.rate, help="frames per second (continuous mode)")
    ap.add_argument("--control-rate", type=float, default=d.control_rate,
                    help="Hz the device is read and the motors commanded (runtime.drive's --rate)")
    ap.add_argument("--step-duration", type=float, default=d.step_duration, help="s per move (step mode)")
    ap.add_argument("--resume", action="store_true", help="continue the numbering of a folder with episodes")
    ap.add_argument("--compression", type=compression_choice, default=d.compression, metavar="gzip|gzip:N|lzf|none",
                    help="of the frames (default: gzip in step mode, lzf at 10 Hz: what the rate affords on 2 cores, "
                         "docs/recording.md)")
    ap.add_argument("--min-free-gb", type=float, default=d.min_free_gb,
                    help="stop recording (the episode kept) before the disk holds less than this")
    add_joy_map_argument(ap)
    ap.add_argument("--cmd-timeout", type=float, default=RecordSpec.cmd_timeout,
                    help="s: the serial controller stops on its own this long after the last command")
    ap.add_argument("--camera-timeout", type=float, default=d.camera_timeout,
                    help="s a camera read may wait, and the oldest frame taken")
    ap.add_argument("--quiet", action="store_true", help="no live status line")
    add_rerun_arguments(ap)
    add_log_level_argument(ap)


def compression_choice(value: str) -> str:
    try:
        frame_compression(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from e
    return value


def build_parser(description: str = "Record demonstrations (python -m runtime.record --help)."
                 ) -> argparse.ArgumentParser:
    """The recorder's options plus the drive's own camera, motor and safety options (one definition each)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_record_arguments(ap)
    add_motor_arguments(ap)
    add_camera_arguments(ap)
    add_safety_arguments(ap)
    return show_defaults(ap)


def instructions_from(args) -> tuple[str, ...]:
    texts = list(args.instruction or [])
    if args.instruction_file is not None:
        try:
            texts += [line.strip() for line in args.instruction_file.read_text().splitlines() if line.strip()]
        except OSError as e:
            raise CommandError(f"--instruction-file {args.instruction_file}: {e.strerror}") from e
    too_long = [t for t in texts if len(t.encode()) > 256]
    if too_long:
        raise CommandError(f"--instruction: {too_long[0][:40]!r}... is {len(too_long[0].encode())} bytes; the "
                           f"episode format stores at most 256 (language_instruction is S256)")
    return tuple(texts) or (DEFAULT_INSTRUCTION,)


def config_from(args, motor: MotorSpec, camera: CameraSpec) -> RecordConfig:
    for name in ("rate", "control_rate", "step_duration"):
        if getattr(args, name) <= 0:
            raise CommandError(f"--{name.replace('_', '-')}: must be > 0, got {getattr(args, name)}")
    if args.ask_instruction and not args.teleop.startswith("keyboard"):
        raise CommandError(f"--ask-instruction types on the keyboard's terminal; --teleop {args.teleop} has none "
                           f"(give --instruction or --instruction-file)")
    if args.mode == "continuous" and args.rate > args.control_rate:
        raise CommandError(f"--rate {args.rate:g} is above --control-rate {args.control_rate:g}: frames are taken "
                           f"on control ticks, so raise --control-rate")
    attrs = {"teleop": args.teleop, "camera": camera.source, "max_speed": [float(v) for v in args.max_speed],
             "motor": motor.motor or ("serial" if motor.serial else "dry-run" if motor.dry_run else "")}
    return RecordConfig(out=args.out, mode=args.mode, rate=args.rate, control_rate=args.control_rate,
                        step_duration=args.step_duration, episodes=args.episodes, episode_seconds=args.episode_seconds,
                        reset_seconds=args.reset_seconds, instructions=instructions_from(args),
                        ask_instruction=args.ask_instruction, resume=args.resume,
                        camera_timeout=args.camera_timeout, compression=args.compression,
                        min_free_gb=args.min_free_gb, status=not args.quiet, attrs=attrs)


def record(spec: RecordSpec, camera=None, motor=None, teleop=None) -> int:
    """Record as `spec` says. A caller (the simulator, a test) may hand in its own camera, motor or opened
    teleop source; otherwise they come from the spec. All are released at the end, the motors at zero."""
    with ExitStack() as stack:
        try:
            # closed last, after the motors are at zero
            rerun = stack.enter_context(RerunLog(replace(spec.rerun, app_id="mobile_vla_record"))) if spec.rerun \
                else None
            if teleop is None:
                teleop = open_teleop(spec.teleop, spec.safety.max_speed, joy_map=spec.joy_map)
            stack.callback(teleop.close)
            if motor is None:
                motor = open_motor(spec.motor, watchdog_s=spec.cmd_timeout, printer=lambda s: None,
                                   max_speed=spec.safety.max_speed, base=spec.safety.base)
            elif not motor.is_connected:
                motor.connect()
            stack.callback(motor.disconnect)
            if camera is None:
                camera = spec.camera.open(max_age=spec.config.camera_timeout)
            stack.callback(camera.disconnect)
        except (DeviceError, CameraError, TeleopError, RerunUnavailable) as e:
            raise CommandError(str(e)) from e
        recorder = Recorder(camera, motor, teleop, SafetyGate(spec.safety), spec.config, rerun=rerun)
        install_signal_handlers(recorder)
        log.info("recording %s episodes into %s with %s (motor %s); Ctrl-C stops (motors go to zero)",
                 spec.config.mode, spec.config.out, spec.teleop, motor.name)
        return recorder.run()

