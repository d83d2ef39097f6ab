"""The C controller firmware (firmware/), compiled here with the host compiler.

The driver tests in tests/runtime/motors/test_serial_controller.py run against it on a pty (the `controller` fixture);
these are the firmware's own: no OS calls in the core, the same kinematics as runtime/motors/kinematics.py,
READY on boot, and fuzzing through a pipe harness (10^5 garbage, truncated and corrupted frames
must not crash it or move its motors, and it must parse exactly what runtime.motors.protocol parses).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runtime.motors.kinematics import make_base
from runtime.motors.protocol import (
    Command,
    ErrorCode,
    FrameParser,
    Limits,
    encode_frame,
    parse_info,
    parse_ready,
    parse_status,
    velocity_payload,
    wheels_payload,
)
from runtime.motors.serial_controller import ControllerMismatch, SerialMotorController
from sim.controller_emulator import ControllerEmulator
from tests.fakes.firmware import (
    CFLAGS,
    FIRMWARE,
    SKETCH,
    FirmwareBuildError,
    FirmwareController,
    StdioHarness,
    build_firmware,
    build_sketch_on_host,
    find_compiler,
)

LIMITS = Limits()  # the firmware's defaults (mvla_config_defaults) are the protocol's reference limits
WHEELS = 4  # the harness runs the default mecanum base


# -- builds -----------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def fuzz_bin(tmp_path_factory, firmware_bin):
    """The harness with AddressSanitizer + UBSan when the toolchain has them (gcc on CI does), else plain."""
    try:
        return build_firmware(tmp_path_factory.mktemp("firmware-asan"), sanitize=True,
                              programs=("stdio_controller",)), True
    except FirmwareBuildError:
        return firmware_bin, False


def test_core_compiles_cleanly_and_calls_nothing_of_an_os(tmp_path):
    cc = find_compiler()
    if cc is None:
        pytest.skip("no C compiler (cc) on PATH")
    obj = tmp_path / "core.o"
    subprocess.run([cc, *CFLAGS, "-c", str(FIRMWARE / "mvla_controller.c"), "-o", str(obj)], check=True)
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm to list the object's symbols")
    undefined = set(subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split())
    undefined -= {"U"}
    # libc's memory functions and libm's sin/cos (omni3 set-up) only: no stdio, no malloc, no syscalls
    allowed = {"memcpy", "memmove", "memset", "sin", "cos", "sincos", "__stack_chk_fail"}  # gcc fuses sin+cos
    assert undefined <= allowed, undefined - allowed
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx:  # an Arduino sketch may compile it as C++ too
        subprocess.run([cxx, "-x", "c++", "-std=c++11", "-Wall", "-Werror", "-fsyntax-only",
                        str(FIRMWARE / "mvla_controller.c")], check=True)


# -- kinematics and boot -----------------------------------------------------------------------------

@pytest.fixture
def board_factory(firmware_bin, tmp_path):
    boards = []

    def make(*args, base=None):
        board = FirmwareController(firmware_bin / "pty_controller", link=tmp_path / f"m{len(boards)}", base=base,
                                   args=args).start()
        boards.append(board)
        return board

    yield make
    for b in boards:
        b.stop()


@pytest.mark.parametrize("name,dims,args", [
    ("mecanum", {"wheel_radius": 0.05, "half_length": 0.12, "half_width": 0.09},
     ["--wheel-radius", "0.05", "--half-length", "0.12", "--half-width", "0.09"]),
    ("omni3", {"wheel_radius": 0.03, "base_radius": 0.2, "first_wheel_deg": 60.0},
     ["--wheel-radius", "0.03", "--base-radius", "0.2", "--first-wheel-deg", "60"]),
    ("differential", {"wheel_radius": 0.06, "track_width": 0.4}, ["--wheel-radius", "0.06", "--track-width", "0.4"]),
])
def test_wheel_duties_follow_runtime_kinematics(board_factory, name, dims, args):
    base = make_base(name, **dims)
    board = board_factory("--base", name, "--max-wheel", "50", *args)
    with SerialMotorController(board.port) as motor:
        for v in [(0.3, 0.0, 0.0), (0.0, 0.2, 0.0), (0.0, 0.0, 1.0), (0.25, -0.1, 0.7)]:
            assert motor.send_velocity(*v).acknowledged
            assert np.asarray(board.duties) * 50 == pytest.approx(base.to_wheels(*v), rel=1e-5, abs=1e-5)


def test_wheel_speeds_give_the_least_squares_body_velocity(board_factory):
    base = make_base("differential")
    board = board_factory("--base", "differential")
    with SerialMotorController(board.port, wheels=base) as motor:
        assert motor.send_velocity(0.3, 0.2, 0.5).acknowledged  # vy cannot be driven: dropped
        assert board.velocity == pytest.approx(base.to_body(base.to_wheels(0.3, 0.0, 0.5)), abs=1e-5)
        assert motor.query_status()["velocity"] == pytest.approx((0.3, 0.0, 0.5), abs=1e-5)


def test_a_wheel_beyond_full_duty_scales_all_wheels_alike(board_factory):
    board = board_factory("--max-wheel", "10")
    base = make_base("mecanum")
    with SerialMotorController(board.port) as motor:
        assert motor.send_velocity(0.5, 0.1, 0.5).acknowledged  # needs 17.5 rad/s on one wheel
        wheels = base.to_wheels(0.5, 0.1, 0.5)
        assert max(abs(d) for d in board.duties) == pytest.approx(1.0)
        assert np.asarray(board.duties) == pytest.approx(wheels / np.abs(wheels).max(), abs=1e-6)  # direction kept


def test_board_says_ready_when_it_boots(firmware_bin, tmp_path):
    board = FirmwareController(firmware_bin / "pty_controller", link=tmp_path / "m").start()
    try:
        fd = os.open(board.port, os.O_RDWR | os.O_NOCTTY)  # no flush on open: the READY is still queued
        try:
            deadline, frames, parser = time.monotonic() + 2, [], FrameParser()
            while not frames and time.monotonic() < deadline:
                frames = parser.feed(os.read(fd, 64))
        finally:
            os.close(fd)
        assert frames[0].type == Command.READY and frames[0].seq == 0
        assert parse_ready(frames[0].payload) == {"version": 1, "wheels": 4, "default_watchdog_ms": 500}
        assert all(d == 0 for d in board.duties)
    finally:
        board.stop()


@pytest.mark.parametrize("base,wheels,kind", [("mecanum", 4, "holonomic"), ("omni3", 3, "holonomic"),
                                               ("differential", 2, "differential")])
def test_the_wheel_count_the_board_runs_is_checked_at_connect(board_factory, base, wheels, kind):
    """pty_controller --base B reports B's wheel count (READY, INFO) and base kind (INFO); the driver refuses
    another --wheels or --base."""
    board = board_factory("--base", base, "--max-linear", "1.5", "--max-angular", "4", "--max-wheel", "60")
    run_base = "omni" if kind == "holonomic" else "diff"
    with SerialMotorController(board.port, wheels=make_base(base), base=run_base) as motor:
        assert motor.info["wheels"] == wheels and motor.info["base"] == kind and motor.verified
        assert motor.info["limits"] == Limits(max_linear=1.5, max_angular=4.0, max_wheel=60.0)
        assert motor.send_velocity(0.1, 0.0, 0.2).acknowledged
    with pytest.raises(ControllerMismatch, match=f"drives a {kind} base"):
        SerialMotorController(board.port, base="diff" if run_base == "omni" else "omni").connect()
    other = next(name for name in ("omni3", "mecanum") if name != base)
    n_other = len(make_base(other).matrix)
    with pytest.raises(ControllerMismatch, match=f"reports {wheels} wheels, but --wheels {other} sends {n_other}"):
        SerialMotorController(board.port, wheels=make_base(other)).connect()
    with pytest.raises(ControllerMismatch, match="--max-speed vx 2 m/s is above the controller's limit 1.5 m/s"):
        SerialMotorController(board.port, max_speed=(2.0, 0.5, 1.0)).connect()


@pytest.fixture(params=["c firmware", "python emulator"])
def capped_board(request, board_factory, tmp_path):
    """make(*pty_controller args) -> a board of that configuration: the C controller, or the emulator given the
    same settings (the emulator must clamp as the core does)."""
    emulators = []

    def make(max_watchdog_ms: int, default_watchdog_ms: int = 500):
        if request.param == "c firmware":
            return board_factory("--max-watchdog-ms", str(max_watchdog_ms),
                                 "--default-watchdog-ms", str(default_watchdog_ms))
        emulators.append(ControllerEmulator(link=tmp_path / f"e{len(emulators)}", max_watchdog_ms=max_watchdog_ms,
                                            default_timeout_ms=default_watchdog_ms).start())
        return emulators[-1]

    yield make
    for e in emulators:
        e.stop()


def stops_after(board, motor, watchdog_ms: int) -> float:
    """Seconds from an acknowledged SET_VELOCITY carrying `watchdog_ms` to the board's own stop."""
    motor.watchdog_ms = watchdog_ms
    assert motor.send_velocity(0.2, 0.0, 0.0).acknowledged
    sent = time.monotonic()
    deadline = sent + 3
    while board.velocity != (0.0, 0.0, 0.0) and time.monotonic() < deadline:
        time.sleep(0.005)
    return board.commands("WATCHDOG")[-1].time - sent


def test_no_setting_lets_a_motion_outlast_the_cap(capped_board):
    # Issue 29, item 8: a cap configured above 1 s is 1 s, a default above the cap is the cap (INFO says so);
    # below it, the cap (0.2 s here) bounds a command's 65535 ms and a 0 ("keep the last") alike.
    loose = capped_board(5000, default_watchdog_ms=3000)
    with SerialMotorController(loose.port) as motor:
        assert (motor.info["max_watchdog_ms"], motor.info["default_watchdog_ms"]) == (1000, 1000)
    board = capped_board(200)
    motor = SerialMotorController(board.port).connect()
    assert (motor.info["max_watchdog_ms"], motor.info["default_watchdog_ms"]) == (200, 200)
    for asked in (0, 65535, 0):  # the default, then beyond the cap, then "keep" (the capped one)
        assert 0.15 < stops_after(board, motor, asked) < 0.35, asked
    motor.disconnect()


# -- the Arduino sketch, on the host ----------------------------------------------------------

def sketch_constant(name: str) -> float:
    import re

    return float(re.search(rf"#define {name} ([0-9.]+)f", SKETCH.read_text()).group(1))


@pytest.fixture(scope="module")
def sketch_program(tmp_path_factory):
    try:
        return build_sketch_on_host(tmp_path_factory.mktemp("sketch"))
    except FirmwareBuildError as e:
        if "no C and C++ compiler" in str(e):
            pytest.skip(str(e))
        raise


PWM_PINS = [3, 5, 6, 9]


def pin_states(err: str) -> list[dict]:
    """The sketch's pins after each motor update (4 PWM writes), from the shim's stderr log."""
    pwm, states = {}, []
    for kind, pin, value in (e for e in (line.split() for line in err.splitlines()) if e and e[0] in ("pin", "pwm")):
        pwm[(kind, int(pin))] = int(value)
        if kind == "pwm" and int(pin) == PWM_PINS[-1]:
            states.append(dict(pwm))
    return states


def run_sketch(program, frames: bytes, seconds: float, env=None) -> tuple[list, str]:
    proc = subprocess.Popen([str(program)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    proc.stdin.write(frames)
    proc.stdin.flush()
    time.sleep(seconds)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "error" not in err.decode(), err
    return FrameParser().feed(out), err.decode()


def test_sketch_drives_its_pins_by_the_kinematics_and_stops_on_the_watchdog(sketch_program):
    # a motion command before QUERY_INFO is refused (NACK 5) and moves nothing; after it, the pins follow
    frames = (encode_frame(Command.SET_VELOCITY, 4, velocity_payload(0.15, 0.2, 0.4, 150))
              + encode_frame(Command.QUERY_INFO, 5)
              + encode_frame(Command.SET_VELOCITY, 6, velocity_payload(0.15, 0.2, 0.4, 150)))
    # 0.5 s: longer than the 150 ms the command carried: the watchdog must fire in between
    (ready, nack, info, ack), err = run_sketch(sketch_program, frames, 0.5)
    assert ready.type == Command.READY and (ack.type, ack.seq) == (Command.ACK, 6)
    assert (nack.type, tuple(nack.payload)) == (Command.NACK, (4, ErrorCode.UNVERIFIED))
    assert info.type == Command.INFO and parse_info(info.payload)["max_watchdog_ms"] == 1000
    assert "wdt enable 250" in err and "reset watchdog" not in err  # the AVR watchdog is on, and never fired
    states = pin_states(err)
    assert all(all(s[("pwm", p)] == 0 for p in PWM_PINS) for s in states[:-2])  # the NACK moved nothing
    boot, moving, stopped = states[0], states[-2], states[-1]
    assert all(boot[("pwm", p)] == 0 for p in PWM_PINS)
    base = make_base("mecanum", wheel_radius=sketch_constant("WHEEL_RADIUS_M"),
                     half_length=sketch_constant("HALF_LENGTH_M"), half_width=sketch_constant("HALF_WIDTH_M"))
    wheels = base.to_wheels(0.15, 0.2, 0.4)  # -3.25, 10.75, 6.75, 0.75 rad/s: both signs, none zero
    reversed_ = [False, True, False, True]
    dirs = [(2, 4), (7, 8), (12, 13), (14, 15)]
    for i, (w, pin) in enumerate(zip(wheels, PWM_PINS)):
        expected = round(abs(w) / sketch_constant("MAX_WHEEL_RAD_S") * 255)
        assert abs(moving[("pwm", pin)] - expected) <= 1, (i, moving, expected)
        forward = (w > 0) != reversed_[i]
        assert (moving[("pin", dirs[i][0])], moving[("pin", dirs[i][1])]) == ((1, 0) if forward else (0, 1)), i
    assert all(stopped[("pwm", p)] == 0 for p in PWM_PINS)  # the watchdog, not the end of input: no link-loss


def test_a_hung_sketch_is_reset_by_the_avr_watchdog_and_its_motors_stop(sketch_program):
    # Issue 29, item 8: an MCU that hangs runs no command watchdog and keeps its PWM; the hardware watchdog
    # (wdt_enable in setup, wdt_reset in loop) resets it 250 ms later, and the reset stops the motors. Without
    # wdt_enable nothing ends the hang: the pins keep driving until the input ends.
    frames = (encode_frame(Command.QUERY_INFO, 1)
              + encode_frame(Command.SET_VELOCITY, 2, velocity_payload(0.15, 0.2, 0.4, 1000)))
    replies, err = run_sketch(sketch_program, frames, 0.8, env={**os.environ, "ARDUINO_SHIM_HANG_AFTER_MS": "200"})
    lines = err.splitlines()
    hang = next(int(line.split()[1]) for line in lines if line.startswith("hang "))
    resets = [int(line.split()[2]) for line in lines if line.startswith("reset watchdog")]
    assert len(resets) == 1 and 250 <= resets[0] - hang <= 400, (hang, resets)
    before = pin_states("\n".join(lines[:lines.index(f"hang {hang}")]))
    after = pin_states("\n".join(lines[lines.index(f"reset watchdog {resets[0]}"):]))
    assert any(before[-1][("pwm", p)] for p in PWM_PINS)  # moving when it hung (the 1 s command had not run out)
    assert after and all(after[0][("pwm", p)] == 0 for p in PWM_PINS)  # setup() after the reset: all at zero
    assert [f.type for f in replies] == [Command.READY, Command.INFO, Command.ACK, Command.READY]  # it says so


@pytest.mark.slow  # about 2 s: the Arduino AVR core compiled for the target
def test_the_sketch_builds_for_an_uno_and_fits(tmp_path):
    """The real toolchain, where it is installed (Debian: gcc-avr avr-libc arduino-core-avr): the sketch with
    avr-libc's <avr/wdt.h> (the shim could hide a name the real header lacks) builds with -Werror for an
    ATmega328P and fits its 32 KB of flash (less the 0.5 KB bootloader) and 2 KB of RAM with room for a stack."""
    import re

    make = shutil.which("make")
    if not (make and shutil.which("avr-gcc") and shutil.which("avr-size")
            and (Path("/usr/share/arduino/hardware/arduino/avr/cores/arduino/Arduino.h")).exists()):
        pytest.skip("no AVR toolchain and Arduino AVR core (apt-get install gcc-avr avr-libc arduino-core-avr)")
    done = subprocess.run([make, "-C", str(FIRMWARE), "uno", f"BUILD={tmp_path}"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    flash = int(re.search(r"Program:\s+(\d+) bytes", done.stdout).group(1))
    ram = int(re.search(r"Data:\s+(\d+) bytes", done.stdout).group(1))
    print(f"\nATmega328P: flash {flash} bytes, RAM {ram} bytes (static)")
    assert flash < 32256 - 4096 and ram < 2048 - 1024, (flash, ram)


# -- fuzzing -----------------------------------------------------------------------------------------
# A fuzzed frame is a recipe of plain values, so Hypothesis (shrinkable) and a seeded Random (bulk)
# produce the same kinds of input: garbage; a frame truncated, with a byte flipped, dropped or
# doubled; or a valid frame that must not move anything (stop, heartbeat, status, NaN/inf/out of
# range speeds, a newer version, an unknown or reply type).

TYPES = [c.value for c in Command] + [0x00, 0x07, 0x7F, 0xFF]
SAFE_TYPES = [t for t in TYPES if t not in (Command.SET_VELOCITY, Command.SET_WHEELS)]
UNSAFE = [math.nan, math.inf, -math.inf, 1e6, -300.0, 150.0]  # beyond every limit of the defaults


def render(recipe) -> bytes:
    category, kind, seq, values, raw, version, where, xor = recipe
    if category == "garbage":
        return raw
    if kind == "velocity":
        frame = encode_frame(Command.SET_VELOCITY, seq, velocity_payload(*values[:3], int(where * 997) & 0xFFFF))
    elif kind == "wheels":
        frame = encode_frame(Command.SET_WHEELS, seq, wheels_payload(values[:WHEELS], 500))
    elif category == "valid":  # velocity and wheel commands with a random payload could be valid moves
        frame = encode_frame(SAFE_TYPES[where % len(SAFE_TYPES)], seq, raw[:32])
    else:
        frame = encode_frame(TYPES[where % len(TYPES)], seq, raw[:32])
    if category == "truncated":
        return frame[:max(1, where % len(frame))]
    if category in ("flipped", "dropped", "doubled"):
        b = bytearray(frame)
        # doubling the first or the last byte would leave garbage next to a valid frame
        i = 1 + where % (len(b) - 2) if category == "doubled" else where % len(b)
        if category == "flipped":
            b[i] ^= xor
        elif category == "dropped":
            del b[i]
        else:
            b.insert(i, b[i])
        return bytes(b)
    # valid and safe: a moving command is made unsafe, or sent under another version
    if kind in ("velocity", "wheels"):
        if xor % 3 == 0:
            return encode_frame(Command.SET_VELOCITY if kind == "velocity" else Command.SET_WHEELS, seq,
                                frame[6:-2], version=2 + version % 14)
        bad = list(values)
        bad[where % (3 if kind == "velocity" else WHEELS)] = UNSAFE[xor % len(UNSAFE)]
        payload = velocity_payload(*bad[:3], 500) if kind == "velocity" else wheels_payload(bad[:WHEELS], 500)
        return encode_frame(Command.SET_VELOCITY if kind == "velocity" else Command.SET_WHEELS, seq, payload)
    return frame


CATEGORIES = ["garbage", "truncated", "flipped", "dropped", "doubled", "valid"]
KINDS = ["velocity", "wheels", "other"]
speeds = st.floats(-2.0, 2.0, width=32) | st.sampled_from([0.0, math.nan, math.inf, 1e30])
recipes = st.tuples(st.sampled_from(CATEGORIES), st.sampled_from(KINDS), st.integers(0, 255),
                    st.lists(speeds, min_size=WHEELS, max_size=WHEELS), st.binary(min_size=1, max_size=40),
                    st.integers(0, 255), st.integers(0, 10_000), st.integers(1, 255))


def random_recipe(rng: random.Random):
    values = [rng.choice([0.0, math.nan, 1e30]) if rng.random() < 0.1 else rng.uniform(-2, 2) for _ in range(WHEELS)]
    return (rng.choice(CATEGORIES), rng.choice(KINDS), rng.randrange(256), values,
            rng.randbytes(rng.randrange(1, 41)), rng.randrange(256), rng.randrange(10_000), rng.randrange(1, 256))


def expected_reply(frame) -> tuple[int, int]:
    """(reply type, NACK code or 0) the spec asks of a controller for this frame."""
    p = frame.payload
    if frame.version != 1:
        return Command.NACK, ErrorCode.BAD_VERSION
    if frame.type == Command.SET_VELOCITY:
        if len(p) != 14:
            return Command.NACK, ErrorCode.BAD_PAYLOAD
        vx, vy, wz, _ = struct.unpack("<fffH", p)
        return (Command.ACK, 0) if LIMITS.body_ok(vx, vy, wz) else (Command.NACK, ErrorCode.OUT_OF_RANGE)
    if frame.type == Command.SET_WHEELS:
        if not p or p[0] != WHEELS or len(p) != 1 + 4 * WHEELS + 2:
            return Command.NACK, ErrorCode.BAD_PAYLOAD
        ok = LIMITS.wheels_ok(struct.unpack(f"<{WHEELS}f", p[1:1 + 4 * WHEELS]))
        return (Command.ACK, 0) if ok else (Command.NACK, ErrorCode.OUT_OF_RANGE)
    if frame.type in (Command.STOP, Command.HEARTBEAT):
        return Command.ACK, 0
    if frame.type == Command.QUERY_STATUS:
        return Command.STATUS, 0
    if frame.type == Command.QUERY_INFO:
        return Command.INFO, 0
    return Command.NACK, ErrorCode.UNKNOWN_COMMAND


def moves(frame) -> bool:
    """A frame that would rightly move the motors: only a CRC-16 collision (1 in 65536) makes one."""
    if expected_reply(frame) != (Command.ACK, 0) or frame.type not in (Command.SET_VELOCITY, Command.SET_WHEELS):
        return False
    values = struct.unpack("<fff", frame.payload[:12]) if frame.type == Command.SET_VELOCITY else \
        struct.unpack(f"<{WHEELS}f", frame.payload[1:1 + 4 * WHEELS])
    return any(values)


# After any prefix, 40 idle bytes complete whatever header is pending (the longest frame is 40
# bytes), so the sentinel QUERY_STATUS that follows is always parsed on its own.
IDLE = b"\x00" * 40


class Fuzzer:
    def __init__(self, harness: StdioHarness):
        self.harness = harness
        self.frames = 0
        self.left_out: set[bytes] = set()  # distinct inputs that were valid moving commands (not sent)
        self.sentinel = 0
        self.sanitized = False
        # a host asks what the board is before it moves it (NACK 5 before): the fuzz runs on a board that was asked
        harness.send(encode_frame(Command.QUERY_INFO, 0))
        assert harness.wait_reply(lambda f: f.type == Command.INFO, 0, timeout=10), harness.close()

    def feed(self, recipes_) -> bool:
        """Send the recipes' bytes and check every reply against the reference parser. A mutation can,
        rarely, leave a valid moving command (a CRC-16 collision, 1 in 65536, or a doubled CRC byte
        equal to its neighbour): the reference parser finds those, and they are not sent. False when
        nothing was sent. They are counted once each: Hypothesis replays and copies the examples it has
        drawn, so one such recipe can come back many times in a run."""
        self.sentinel = (self.sentinel + 1) & 0xFF
        chunks = []
        for r in recipes_:
            raw = render(r)
            if any(moves(f) for f in FrameParser().feed(raw + IDLE)):
                self.left_out.add(raw)
            else:
                chunks.append(raw)
        stream = b"".join(chunks) + IDLE + encode_frame(Command.QUERY_STATUS, self.sentinel)
        reference = FrameParser().feed(stream)
        if any(moves(f) for f in reference):  # across two recipes
            self.left_out.add(stream)
            return False
        start = len(self.harness.replies)
        self.harness.send(stream)
        got = self.harness.wait_reply(lambda f: False, start, timeout=0) or []
        deadline = time.monotonic() + 10
        while len(self.harness.replies) < start + len(reference) and time.monotonic() < deadline:
            if not self.harness.alive():
                break
            time.sleep(0.0005)
        got = self.harness.replies[start:start + len(reference)]
        assert self.harness.alive(), f"the controller died: {self.harness.close()}"
        assert len(got) == len(reference), f"{len(got)} replies to {len(reference)} frames"
        for frame, reply in zip(reference, got):  # it parses exactly what runtime.motors.protocol parses
            kind, code = expected_reply(frame)
            assert (reply.type, reply.seq) == (kind, frame.seq), (frame, reply)
            if kind not in (Command.STATUS, Command.INFO):
                assert tuple(reply.payload) == (frame.seq, code), (frame, reply)
        status = parse_status(got[-1].payload)
        assert not status["moving"] and status["velocity"] == (0.0, 0.0, 0.0)
        self.frames += len(chunks)
        return True


@pytest.fixture
def fuzzer(fuzz_bin):
    binary_dir, sanitized = fuzz_bin
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    harness = StdioHarness(binary_dir / "stdio_controller", env=env)
    fuzz = Fuzzer(harness)
    fuzz.sanitized = sanitized
    yield fuzz
    harness.close()


def still_obeys_and_never_moved(fuzzer) -> str:
    """After the fuzz: alive, a valid command is obeyed, no sanitizer report, and the only motor
    output that was ever non-zero is that command's. Returns the harness's summary line."""
    harness = fuzzer.harness
    assert harness.alive(), harness.close()
    start = len(harness.replies)
    harness.send(encode_frame(Command.SET_VELOCITY, 7, velocity_payload(0.2, 0.0, 0.0, 500)))
    got = harness.wait_reply(lambda f: f.seq == 7, start, timeout=5)
    assert got and got[-1].type == Command.ACK
    summary = harness.close()
    assert harness.proc.returncode == 0, summary
    assert "runtime error" not in summary and "AddressSanitizer" not in summary, summary
    moved = [line for line in summary.splitlines() if line.startswith("moved ")]
    assert len(moved) == 1 and moved[0].split()[2:] == ["0.050000"] * 4, summary  # 0.2 m/s / 0.04 m / 100
    assert len(fuzzer.left_out) < 0.001 * max(fuzzer.frames, 1000)
    return summary.splitlines()[-1]


def test_fuzzed_frames_never_move_the_motors(fuzzer):
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(recipes, min_size=1, max_size=20))
    def batches(batch):
        assume(fuzzer.feed(batch))

    batches()
    still_obeys_and_never_moved(fuzzer)


BULK = 100_000
EXAMPLES = 10


def test_a_hundred_thousand_fuzzed_frames(fuzzer):
    # Hypothesis draws the seeds; each example sends 10^4 frames in batches of 500. (Hypothesis draws
    # structured frames at about 1000 a second, the test above: too slow for 10^5 in a unit test.)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.randoms(use_true_random=True))
    def bulk(rng):
        goal = fuzzer.frames + BULK // EXAMPLES
        while fuzzer.frames < goal:
            fuzzer.feed([random_recipe(rng) for _ in range(min(500, goal - fuzzer.frames))])

    start = time.perf_counter()
    bulk()
    elapsed = time.perf_counter() - start
    assert fuzzer.frames >= BULK
    summary = still_obeys_and_never_moved(fuzzer)
    print(f"\n{fuzzer.frames} fuzzed frames in {elapsed:.1f} s ({fuzzer.frames / elapsed:.0f}/s, "
          f"{'ASan+UBSan' if fuzzer.sanitized else 'plain'} build, reference parsing included): {summary}; "
          f"{len(fuzzer.left_out)} recipes left out as valid moving commands")


def test_fuzz_through_the_pty_then_the_driver_still_works(controller):
    # The same recipes through the real pty and the driver's own port, on both controllers
    rng = random.Random(14)
    motor = SerialMotorController(controller.port).connect()
    stream = b"".join(render(r) for r in (random_recipe(rng) for _ in range(5000)))
    reference = FrameParser().feed(stream + IDLE)
    assert not any(moves(f) for f in reference)
    for i in range(0, len(stream), 4096):
        motor.link.serial.write(stream[i:i + 4096])
        time.sleep(0.002)  # a UART's pace, so the pty's 4 kB buffer is never the limit
    motor.link.serial.write(IDLE)
    assert any(motor.heartbeat() for _ in range(3))  # answered after every fuzz byte was handled
    assert controller.commands() and all(r.velocity == (0.0, 0.0, 0.0) for r in controller.commands())
    assert motor.send_velocity(0.2, 0.0, 0.0).acknowledged
    assert controller.velocity == pytest.approx((0.2, 0.0, 0.0))
    motor.disconnect()


# -- the whole robot side on the C controller ------------------------------------------------------

def test_runtime_drive_on_the_tiny_bundle_drives_the_c_controller(tiny_bundle_dir, firmware_bin, tmp_path):
    import cv2

    from runtime.cameras.sample_frames import sample_frames
    from runtime.control.steplog import read_log
    from tests.helpers.processes import run_drive

    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(sample_frames(12, height=48, width=64)):
        cv2.imwrite(str(frames / f"{i:04d}.png"), f)
    board = FirmwareController(firmware_bin / "pty_controller", link=tmp_path / "motor").start()
    try:
        done = run_drive("--bundle", str(tiny_bundle_dir), "--serial", board.port, "--camera", str(frames), "--rate",
                         "50", "--max-steps", "8", "--quiet", "--log", str(tmp_path / "log"))
        assert done.returncode == 0, done.stderr
        steps = [r for r in read_log(tmp_path / "log") if r.get("type") == "step"]
        assert steps  # a step is logged when a control tick first sends it (a faster policy skips some)
        assert all(r["sent"] and r["acknowledged"] for r in steps)  # what the log claims, the board confirmed
        applied = [r.velocity for r in board.commands("SET_VELOCITY")]
        for r in steps:
            assert any(np.allclose(v, r["command"], atol=1e-6) for v in applied), r["command"]
        assert any(any(v) for v in applied)  # the policy did move it
        assert board.velocity == (0.0, 0.0, 0.0) and board.commands()[-1].command == "STOP"
    finally:
        board.stop()


def test_the_sketchs_copy_of_the_core_is_the_core():
    """The Arduino IDE builds only what is inside the sketch folder: the committed copy must be the core
    (`make -C firmware sketch` refreshes it), so a fresh clone builds in the IDE as it is."""
    src = SKETCH.parent / "src"
    for name in ("mvla_controller.c", "mvla_controller.h"):
        assert (src / name).read_bytes() == (FIRMWARE / name).read_bytes(), f"run make -C firmware sketch ({name})"
    readme = (SKETCH.parent / "README.md").read_text().splitlines()[0]
    assert "Arduino IDE" in readme and "complete as committed" in readme
