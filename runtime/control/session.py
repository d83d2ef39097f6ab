"""One drive, assembled: what a `DriveSpec` names is opened through each room's opener, handed to the
control loop, and released at the end with the motors at zero.

    drive(DriveSpec(policy=PolicySpec(bundle), motor=MotorSpec(serial=port)))
    drive(spec, camera=my_camera, motor=my_motor)     # the simulator hands in its own (sim/drive.py)
    spec = spec_from_args(build_parser().parse_args(argv))   # what `python -m runtime.drive` does

Each part of the spec (policy, motor, camera, loop, safety, arming, takeover,
remote policy, async chunks, the Rerun log) owns its defaults, and `build_parser()` reads
them from there. Devices are opened by their room's opener
(`runtime.cameras.select`, `runtime.motors.select`, `runtime.teleop.select`
through the takeover), never by name here: a new camera or motor kind needs
no change in control/. The signal handlers come first: a SIGTERM while the
bundle, the motor or the camera opens still releases what was opened.
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from runtime.cameras.select import CameraSpec, add_camera_arguments
from runtime.control.arm_sources import open_arm_sources
from runtime.control.arming import ArmSpec, add_arm_arguments
from runtime.control.authority import MotionAuthority
from runtime.control.config import DriveConfig, add_loop_arguments
from runtime.control.loop import DriveLoop
from runtime.control.ros2 import Ros2DriveInterface
from runtime.control.safety import SafetyConfig, SafetyGate, add_safety_arguments
from runtime.control.signals import StopRequest, install_signal_handlers
from runtime.control.steplog import StepLog
from runtime.hardware import DeviceError
from runtime.logs import add_log_level_argument
from runtime.motors.select import MotorSpec, add_motor_arguments, open_motor
from runtime.policy.async_chunks import AsyncConfig, add_async_arguments, async_config_from_args, open_chunks
from runtime.policy.backends.base import BackendError
from runtime.policy.bundle import BundleError, read_driving
from runtime.policy.driving import driving_settings
from runtime.policy.onboard import bundle_frame_spacing, check_frame_spacing
from runtime.policy.prompt import PromptTooLongError
from runtime.policy.remote import add_remote_arguments, open_remote_policy, remote_config_from_args
from runtime.policy.remote_encoder import RemoteConfig
from runtime.policy.select import PolicySpec, add_policy_arguments, open_policy, retarget_policy
from runtime.recording.rerun_log import RerunLog, RerunSpec, RerunUnavailable, add_rerun_arguments, import_rerun
from runtime.recording.takeover import TakeoverSpec, add_takeover_arguments, open_takeover

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class DriveSpec:
    policy: PolicySpec  # which bundle, backend, instruction and behaviours
    motor: MotorSpec = MotorSpec()  # which motor side (ignored when drive() is handed a motor)
    camera: CameraSpec = CameraSpec()  # which camera (ignored when drive() is handed a camera)
    loop: DriveConfig = DriveConfig()  # mode, rates and timeouts
    safety: SafetyConfig = SafetyConfig()  # speed and acceleration limits, dead zone, base
    log: Path | None = None  # JSON-lines log of every step; None: no log
    takeover: TakeoverSpec | None = None  # --teleop/--record: a person may take over, the run recorded
    remote: RemoteConfig | None = None  # vision + language on a policy server (--policy ws://...); None: onboard
    chunks: AsyncConfig | None = None  # --async: play chunks while the next is inferred; None: one action a frame
    arm: ArmSpec = ArmSpec()  # disarmed start and the arm / e-stop sources
    rerun: RerunSpec | None = None  # --rerun: what the robot saw and did, to an .rrd file or a viewer; None: off

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DriveSpec:
        return cls(PolicySpec.from_args(args), MotorSpec.from_args(args), CameraSpec.from_args(args),
                   DriveConfig.from_args(args), SafetyConfig.from_args(args), args.log, TakeoverSpec.from_args(args),
                   remote_config_from_args(args), async_config_from_args(args), ArmSpec.from_args(args),
                   rerun=RerunSpec.from_args(args))


def build_parser(description: str = "Drive the robot with a bundle (python -m runtime.drive --help)."
                 ) -> argparse.ArgumentParser:
    """The drive options (sim.drive adds its own to them); defaults come from the specs."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_policy_arguments(ap)
    add_motor_arguments(ap)
    add_camera_arguments(ap)
    add_loop_arguments(ap)
    add_safety_arguments(ap)
    add_takeover_arguments(ap)
    add_remote_arguments(ap)
    add_async_arguments(ap)
    add_arm_arguments(ap)
    ap.add_argument("--log", type=Path,
                    help="JSON-lines log of every step (an existing one is renamed, never overwritten)")
    add_rerun_arguments(ap)
    add_log_level_argument(ap)
    return ap


def spec_from_args(args: argparse.Namespace) -> DriveSpec:
    """The DriveSpec a command line asks for. Mode, snapping and move duration not given on it (None) come from
    the bundle's driving record, so the robot drives the policy as it was validated; a log line says which."""
    settings = driving_settings(read_driving(args.bundle), args.mode, args.discrete, args.step_duration)
    log.info("driving settings: %s", settings.describe())
    chosen = {"mode": settings.mode, "discrete": settings.discrete, "step_duration": settings.step_duration}
    return DriveSpec.from_args(argparse.Namespace(**{**vars(args), **chosen}))


def uses_ros(spec: DriveSpec, camera, motor) -> bool:
    """Whether this run has a ROS 2 part, and so serves /diagnostics, ~/arm, ~/estop and ~/instruction."""
    return (type(motor).__module__ == "runtime.motors.ros2" or type(camera).__module__ == "runtime.cameras.ros2"
            or spec.motor.motor == "ros2" or spec.camera.source.startswith("ros2:"))


def drive(spec: DriveSpec, camera=None, motor=None) -> int:
    """Drive as `spec` says. A caller (the simulator) may hand in its own `camera` (a runtime.hardware.Camera)
    and `motor` (a MotorController, connected here if it is not yet); otherwise they come from spec.camera and
    spec.motor. Both are disconnected when the drive ends, and the backend is released. The signal handlers
    come first: a SIGTERM while the bundle, the motor or the camera opens still releases what was opened."""
    stop = StopRequest()
    install_signal_handlers(stop)

    def stopped() -> bool:
        if stop.reason:
            log.warning("%s before driving: stopped; motors at zero", stop.reason)
        return bool(stop.reason)

    with ExitStack() as stack:
        try:
            if spec.rerun:
                import_rerun()  # before the bundle loads: a missing rerun-sdk says how to install it at once
            policy = stack.enter_context(open_remote_policy(spec.policy, spec.remote) if spec.remote
                                         else open_policy(spec.policy))
            spacing = bundle_frame_spacing(policy.bundle)
            check_frame_spacing(spacing, spec.loop.mode, spec.loop.step_duration)
            # closed last: after the loop, with the motors at zero (a slow viewer never delays a stop); the chunk's
            # actions are the bundle's frame spacing apart, the arrow's full length is the gate's top speed
            rerun = stack.enter_context(RerunLog(replace(spec.rerun, chunk_spacing_s=spacing, top_speed=max(
                spec.safety.max_speed[:2])))) if spec.rerun else None
            chunks = open_chunks(spec.chunks, policy, spec.policy.discrete, spec.loop.mode)
            if stopped():
                return 0
            if motor is None:
                motor = open_motor(spec.motor, watchdog_s=spec.loop.cmd_timeout, max_speed=spec.safety.max_speed,
                                   base=spec.safety.base,
                                   printer=(lambda s: print(s, flush=True)))
            elif not motor.is_connected:
                motor.connect()
            stack.callback(motor.disconnect)  # zero and release what was opened (a ROS node, a port)
            if stopped():
                return 0
            if camera is None:
                camera = spec.camera.open(max_age=spec.loop.camera_timeout)
            stack.callback(camera.disconnect)
            if stopped():
                return 0
            # disarmed until armed: by a source (--start-disarmed), or by itself once the pre-arm checks pass
            arm = arm_spec_beside_takeover(spec.arm, spec.takeover, uses_ros(spec, camera, motor))
            check_arm_spec(arm, uses_ros(spec, camera, motor))
            authority = MotionAuthority(armed=False, auto_arm=not spec.arm.start_disarmed, starting=True)
            if rerun is not None:  # every transition from the first, the arm sources' own included
                rerun.follow(authority)
            for source in open_arm_sources(arm, authority):
                stack.callback(source.close)
            face = None
            if uses_ros(spec, camera, motor):
                face = Ros2DriveInterface(authority, on_instruction=lambda text: stop.loop and
                                          stop.loop.set_instruction(text),
                                          estop_period=spec.arm.ros_estop_period).open()
                stack.callback(face.close)
        except (BundleError, BackendError, DeviceError, PromptTooLongError, ValueError, RerunUnavailable) as e:
            log.error("%s", e)
            return 1
        if rerun is not None:
            rerun.instruction(policy.instruction)
        log.info("driving with %s, instruction %r, mode %s, motor %s; Ctrl-C stops (motors go to zero)",
                 policy.backend.describe(), policy.instruction, spec.loop.mode, motor.name)
        if spec.arm.start_disarmed:
            log.warning("disarmed: zeros until armed (%s)", arm_hint(arm, face))
        else:
            log.info("arms itself once the pre-arm checks pass (camera fresh, policy warmed, motor link verified, "
                     "e-stop inputs released): docs/reliability.md")
        takeover = None
        if spec.takeover is not None:
            try:
                takeover = open_takeover(spec.takeover, spec.safety.max_speed, policy.instruction)
            except DeviceError as e:
                log.error("%s", e)
                return 1
            stack.callback(takeover.close)  # after the loop: the run's episode saved, the device released
        steplog = stack.enter_context(StepLog(spec.log))
        loop = DriveLoop(policy, camera, motor, SafetyGate(spec.safety), spec.loop, steplog, takeover=takeover,
                         chunks=chunks, authority=authority, ros=face,
                         retarget=lambda text: retarget_policy(policy, spec.policy, text), rerun=rerun)
        stop.attach(loop)
        return loop.run()


def arm_spec_beside_takeover(spec: ArmSpec, takeover: TakeoverSpec | None, ros: bool) -> ArmSpec:
    """The arm sources a drive opens beside its take-over. The keyboard take-over reads the drive's own terminal,
    where the terminal's arm keys would read too and take its keys (a: left arms, d: right disarms, space: stop
    latches the e-stop): with it, the terminal's keys are off and arming needs another source. ValueError when
    --start-disarmed would then leave nothing to arm with."""
    if takeover is None or takeover.teleop != "keyboard" or takeover.source is not None:
        return spec
    if spec.start_disarmed and not (spec.gamepad and spec.arm_button is not None) and not spec.arm_gpio and not ros:
        raise ValueError("--start-disarmed with --teleop keyboard: the take-over's keys read this terminal, so the "
                         "terminal's arm keys are off and nothing could arm the robot; add --gamepad with "
                         "--arm-button, --arm-gpio or a ROS 2 part (the ~/arm service), or take over with a gamepad")
    log.warning("--teleop keyboard: this terminal's keys drive the take-over, so its arm, disarm and e-stop keys are "
                "off (Ctrl-C still stops; an e-stop by --gamepad, --estop-gpio or ROS)")
    return replace(spec, terminal_keys=False)


def check_arm_spec(spec: ArmSpec, ros: bool) -> None:
    """An arm or e-stop input asked for that would silently not exist is refused, naming the flag."""
    if not spec.gamepad:
        named = [flag for flag, value in (("--arm-button", spec.arm_button), ("--estop-button", spec.estop_button),
                                          ("--reset-button", spec.reset_button)) if value is not None]
        if named:
            raise ValueError(f"{', '.join(named)} without --gamepad: no gamepad is read, so that button would not "
                             f"exist; give --gamepad /dev/input/jsN")
    if spec.ros_estop_period is not None and not ros:
        raise ValueError("--ros-estop-period without a ROS 2 part (--motor ros2 or --camera ros2:...): the ~/estop "
                         "topic would not exist; drop it, or run the drive's ROS 2 interface")


def arm_hint(spec: ArmSpec, face) -> str:
    ways, resets = [], []
    if spec.terminal_keys and sys.stdin is not None and sys.stdin.isatty():
        ways.append(f"key {spec.arm_key!r}")
        resets.append(f"key {spec.reset_key!r}")
    if spec.gamepad and spec.arm_button is not None:
        ways.append(f"gamepad button {spec.arm_button}")
    if spec.gamepad and spec.reset_button is not None:
        resets.append(f"gamepad button {spec.reset_button}")
    if spec.arm_gpio:
        ways.append(f"GPIO {spec.arm_gpio}")
    if face is not None:
        ways.append(f"ros2 service call {face.node_name}/arm std_srvs/srv/Trigger")
        resets.append(f"ros2 service call {face.node_name}/reset_estop std_srvs/srv/Trigger")
    if not ways:
        return ("no way to arm is configured: give --gamepad and --arm-button, --arm-gpio, or a ROS 2 part (the "
                "~/arm service)")
    return "arm with " + " or ".join(ways) + ("; reset an e-stop with " + " or ".join(resets) if resets else "")


