"""Pre-flight checks before a robot drives: one line per check, exit 1 if any failed.

    python -m runtime.preflight --bundle bundle/ --camera csi --serial /dev/mobile-vla-motor
    python -m runtime.preflight --bundle bundle/ --camera episode.h5 --serial /tmp/mvla-motor --fps 0

Checks: the bundle's fields and the sha256 of every file (a full
verification, recorded so that the next `runtime.drive` start only checks
sizes and times of the big files; `--verify quick` to skip it); on a Jetson,
the L4T revision against the TensorRT version found (runtime.jetpack); its
TensorRT engines against this machine's TensorRT version and GPU (skipped
where there are none); whether OpenCV has GStreamer (the CSI camera needs
it); the camera delivers frames at >= 80% of --fps (0: just one frame); the
motor controller acknowledges a heartbeat and answers a status query, and
what it reports (protocol version, wheel count, base kind, limits) matches
`--wheels`, `--base` and `--max-speed` as runtime.drive will use them (a
mismatch fails, naming both values; a controller that cannot say fails
unless --allow-unverified-controller); a port another program holds fails
naming it. For `--motor ros2`: a base-side command timeout among the
subscribers (twist_mux's `topics.*.timeout` is not one: it stops forwarding
a silent input and does not zero the base).
"""

from __future__ import annotations

import argparse
import sys
import time

from runtime.cameras.select import open_camera
from runtime.control.safety import BASES, SafetyConfig
from runtime.hardware import CameraError, DeviceError
from runtime.logs import add_log_level_argument, setup_logging
from runtime.motors.kinematics import make_base
from runtime.motors.select import MotorSpec, add_motor_arguments, open_motor
from runtime.motors.serial_controller import SerialMotorController
from runtime.motors.serial_link import MotorError
from runtime.policy.backends.base import BackendError
from runtime.policy.backends.cuda_device import cuda_device_name
from runtime.policy.backends.jetpack import check_l4t_tensorrt, check_opencv
from runtime.policy.backends.tensorrt import check_engine
from runtime.policy.bundle import BundleError, load_bundle


def check_bundle(path, verify: str = "full"):
    try:
        b = load_bundle(path, verify=verify)
    except BundleError as e:
        return "FAIL", str(e), None
    return "OK", (f"{path}: fields; sha256 of {len(b.verified['hashed'])} files"
                  + (f", {len(b.verified['trusted'])} unchanged since verified" if b.verified["trusted"] else "")), b


def check_engines(bundle):
    engines = bundle.manifest.get("engines", []) if bundle else []
    if not engines:
        return "SKIP", "no TensorRT engines in the bundle (bash jetson/build_engines.sh BUNDLE builds them)"
    try:
        import tensorrt
    except ImportError:
        return "FAIL", "the bundle has engines but tensorrt is not importable here (JetPack's python3-libnvinfer)"

    try:
        gpu = cuda_device_name()
        for e in engines:
            check_engine(e, tensorrt.__version__, gpu)
    except BackendError as err:
        return "FAIL", str(err)
    return "OK", f"{len(engines)} engines match TensorRT {tensorrt.__version__} on {gpu}"


def check_camera(spec, fps: float, seconds: float = 2.0):
    try:
        cam = open_camera(spec, max_age=1.0)
    except CameraError as e:
        return "FAIL", str(e)
    try:
        first = cam.read(timeout=3.0)
        if not fps:
            return "OK", f"camera {spec}: frame {first.image.shape[1]}x{first.image.shape[0]}"
        n, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            cam.read(timeout=1.0)
            n += 1
        rate = n / (time.monotonic() - start)
    except CameraError as e:
        return "FAIL", f"camera {spec}: {e}"
    finally:
        cam.disconnect()
    status = "OK" if rate >= 0.8 * fps else "FAIL"
    return status, f"camera {spec}: {rate:.1f} fps (expected {fps:g})"


def describe_info(info: dict | None) -> str:
    if info is None:
        return "configuration not reported (a controller older than QUERY_INFO: wheel count and limits unchecked)"
    lim = info["limits"]
    wheels = "body velocity only" if info["wheels"] == 0 else f"{info['wheels']} wheels"
    base = "" if info.get("base", "unknown") == "unknown" else f", {info['base']} base"
    cap = "" if info.get("max_watchdog_ms") is None else f", watchdog at most {info['max_watchdog_ms']} ms"
    return (f"protocol {info['version']}, {wheels}{base}, limits {lim.max_linear:g} m/s, {lim.max_angular:g} rad/s, "
            f"{lim.max_wheel:g} rad/s per wheel{cap}")


def check_controller(port, baudrate: int = 115200, wheels: str | None = None, max_speed=None, base: str | None = None,
                     allow_unverified: bool = False):
    try:
        motor = SerialMotorController(port, baudrate, ack_timeout_s=0.2, wheels=make_base(wheels) if wheels else None,
                                      max_speed=max_speed, base=base, allow_unverified=allow_unverified).connect()
    except MotorError as e:
        return "FAIL", str(e)
    try:
        if not motor.heartbeat():
            return "FAIL", f"{port}: no acknowledgement of a heartbeat (wrong baud rate or protocol version?)"
        status = motor.query_status()
        if status is None:
            return "FAIL", f"{port}: heartbeat acknowledged but no status reply"
        checked = "" if motor.verified else " (NOT verified: --allow-unverified-controller)"
        return ("OK" if motor.verified else "WARN"), (
            f"{port}: heartbeat acknowledged, status {'moving' if status['moving'] else 'stopped'}; "
            f"{describe_info(motor.info)}{checked}")
    finally:
        motor.disconnect()


MUX_PREFIXES = ("topics.", "locks.")  # twist_mux's per-input parameters (topics.NAME.timeout, locks.NAME.timeout)


def split_mux_timeouts(timeouts: dict[str, dict[str, float]]) -> tuple[dict, dict]:
    """(base-side timeouts, twist_mux input timeouts) by node, each without empty nodes. A twist_mux input's
    timeout only stops forwarding that input: the base behind keeps the last command it got."""
    base, mux = {}, {}
    for node, values in timeouts.items():
        for key, value in values.items():
            (mux if key.startswith(MUX_PREFIXES) else base).setdefault(node, {})[key] = value
    return base, mux


def check_motor(spec):
    """A motor side other than our serial controller (--motor ros2, a vendor class, dry-run): it connects and
    a zero goes out, with what the link says about it. `spec`: a runtime.motors.select.MotorSpec. For ROS 2
    also: somebody subscribes to the velocity topic (else WARN, naming the Twist/TwistStamped mismatch when
    that is it), and whether the subscribing base exposes a command timeout (docs/motors.md)."""
    try:
        motor = open_motor(spec)
    except DeviceError as e:
        return "FAIL", str(e)
    try:
        zero = motor.send_velocity(0.0, 0.0, 0.0)
        if not zero.delivered:
            return "FAIL", f"--motor {spec.motor}: connected, but a zero command did not go out ({zero})"
        acks = {None: "the link has no acknowledgements", True: "acknowledged"}[zero.acknowledged]
        line = f"--motor {spec.motor} ({motor.name}): a zero went out, {acks}"
        if not hasattr(motor, "explain"):
            return "OK", line
        seen = motor.explain()
        if not seen["subscribers"]:
            return "WARN", f"{line}; {seen['why']}"
        timeouts, mux = split_mux_timeouts(seen["timeouts"])
        said_mux = "; ".join(f"{node} {k}={v:g} s" for node, values in mux.items() for k, v in values.items())
        not_base = (f"; {said_mux}: twist_mux's input timeout stops forwarding a silent input, it does not zero the "
                    f"base (nothing more is sent), so it is not a base-side timeout") if mux else ""
        if not timeouts:
            return "WARN", (f"{line}; {seen['subscribers']} subscriber(s) on {motor.resolved_topic}, none exposing a "
                            f"base-side command timeout (cmd_vel_timeout){not_base}: if this machine hangs, nothing "
                            f"stops the base. Configure one on the base (docs/motors.md)")
        said = "; ".join(f"{node} {k}={v:g} s" for node, values in timeouts.items() for k, v in values.items())
        return "OK", f"{line}; base-side command timeout: {said}{not_base}"
    finally:
        motor.disconnect()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--camera")
    ap.add_argument("--fps", type=float, default=30.0)
    # the drive's motor options: --serial gets a heartbeat, a status query and its configuration checked
    # against --wheels and --max-speed; any other --motor connects, sends a zero and disconnects
    add_motor_arguments(ap)
    ap.add_argument("--max-speed", type=float, nargs=3, default=SafetyConfig.max_speed, metavar=("VX", "VY", "WZ"),
                    help="as runtime.drive --max-speed: must be within the controller's limits")
    ap.add_argument("--base", default=SafetyConfig.base, choices=BASES,
                    help="as runtime.drive --base: must be the controller's base kind (holonomic: omni, "
                         "differential: diff)")
    ap.add_argument("--verify", choices=("full", "quick"), default="full",
                    help="full (default): sha256 of every file, recorded for fast starts; quick: as runtime.drive")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)

    results = []
    status, msg, bundle = check_bundle(args.bundle, args.verify)
    results.append(("bundle", status, msg))
    results.append(("jetpack", *check_l4t_tensorrt()))
    results.append(("engines", *check_engines(bundle)))
    results.append(("opencv", *check_opencv(args.camera)))
    results.append(("camera", *(check_camera(args.camera, args.fps) if args.camera else ("SKIP", "no --camera"))))
    if args.motor and args.motor != "serial":
        results.append(("controller", *check_motor(MotorSpec.from_args(args))))
    else:
        results.append(("controller", *(check_controller(args.serial, args.baudrate, args.wheels, args.max_speed,
                                                         args.base, args.allow_unverified_controller)
                                        if args.serial
                                        else ("SKIP", "no --serial or --motor"))))
    for name, status, msg in results:
        print(f"{status:<4} {name:<10} {msg}")
    return 1 if any(s == "FAIL" for _, s, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
