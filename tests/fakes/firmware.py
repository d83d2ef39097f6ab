"""The C controller firmware (firmware/) built with the host compiler, and driven like the Python emulator.

    bin_dir = build_firmware(tmp_dir)                       # cc -std=c99 ... -> pty_controller, stdio_controller
    board = FirmwareController(bin_dir / "pty_controller", link=tmp / "motor").start()
    ... SerialMotorController(board.port) ...
    board.velocity, board.duties, board.commands("WATCHDOG"), board.unplug(), board.replug(), board.reboot(0.5)
    harness = StdioHarness(bin_dir / "stdio_controller")     # protocol bytes through a pipe (fuzzing)

FirmwareController has the interface of sim.controller_emulator.ControllerEmulator,
so one set of driver tests runs on both (tests/conftest.py: `controller`).
Not a fake of our logic: the real firmware code on a real pseudo-terminal; only
the "board" (cable, reset button, motor pins) is the host program's stdin/stdout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from runtime.motors.protocol import FrameParser
from sim.controller_emulator import Received

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]
SANITIZE = ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
PROGRAMS = ("pty_controller", "stdio_controller")


class FirmwareBuildError(RuntimeError):
    pass


def find_compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("cc") or shutil.which("gcc")


def build_firmware(out_dir: Path, sanitize: bool = False, programs=PROGRAMS) -> Path:
    """Compile the host programs into out_dir, exactly as firmware/Makefile does; returns out_dir."""
    cc = find_compiler()
    if cc is None:
        raise FirmwareBuildError("no C compiler (cc) on PATH")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in programs:
        cmd = [cc, *CFLAGS, *(SANITIZE if sanitize else []), "-o", str(out_dir / name),
               str(FIRMWARE / "host" / f"{name}.c"), str(FIRMWARE / "mvla_controller.c"), "-lm"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise FirmwareBuildError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr}")
    return out_dir


SKETCH = FIRMWARE / "arduino" / "mobile_vla_controller" / "mobile_vla_controller.ino"


def build_sketch_on_host(out_dir: Path) -> Path:
    """The Arduino sketch compiled for the host against firmware/host/arduino_shim (as `make sketch-on-host`):
    Serial is stdin/stdout, pin writes go to stderr. Returns the program."""
    cc, cxx = find_compiler(), shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    if cc is None or cxx is None:
        raise FirmwareBuildError("no C and C++ compiler (cc, c++) on PATH")
    out_dir = Path(out_dir)
    (out_dir / "src").mkdir(parents=True, exist_ok=True)
    for name in ("mvla_controller.c", "mvla_controller.h"):
        shutil.copy(FIRMWARE / name, out_dir / "src" / name)  # where the Arduino IDE wants them
    shutil.copy(SKETCH, out_dir / "sketch.cpp")
    shim = FIRMWARE / "host" / "arduino_shim"
    for cmd in ([cc, *CFLAGS, "-c", "-o", str(out_dir / "core.o"), str(FIRMWARE / "mvla_controller.c")],
                [cxx, "-std=c++11", "-O2", "-Wall", "-Wextra", "-Werror", "-include", "Arduino.h", f"-I{shim}",
                 f"-I{out_dir}", "-o", str(out_dir / "sketch_on_host"), str(out_dir / "sketch.cpp"),
                 str(shim / "main.cpp"), str(out_dir / "core.o"), "-lm"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise FirmwareBuildError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr}")
    return out_dir / "sketch_on_host"


class FirmwareController:
    """firmware/host/pty_controller as a board on a pseudo-terminal, with the emulator's interface."""

    def __init__(self, binary: Path, link: Path, base=None, args=()):
        self.binary = Path(binary)
        self.link = Path(link)
        self.base = base
        self.args = list(args)
        self._velocity = (0.0, 0.0, 0.0)
        self._duties: tuple[float, ...] = ()
        self.history: list[Received] = []
        self.readies = 0
        self.proc = None
        self._respond = True
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._done: list[str] = []
        self._lines: list[str] = []
        self.on_velocity = None  # called with (vx, vy, wz) each time the board applies a velocity

    @property
    def port(self) -> str:
        return str(self.link)

    def start(self) -> FirmwareController:
        cmd = [str(self.binary), "--link", str(self.link), *self.args]
        # the exact matrix of runtime.motors.kinematics, so both sides agree to float precision
        if self.base is not None:
            cmd += ["--matrix", ",".join(repr(float(v)) for v in self.base.matrix.ravel())]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        threading.Thread(target=self._read, name="firmware-stdout", daemon=True).start()
        self._wait(lambda: self.readies >= 1, f"{self.binary.name} did not start")
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = line.split()
            if not parts:
                continue
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                if parts[0] == "apply":
                    self._velocity = tuple(float(v) for v in parts[3:6])
                    self.history.append(Received(time.monotonic(), parts[2], self._velocity))
                    if self.on_velocity:  # as the emulator's: a simulated robot follows the board
                        self.on_velocity(*self._velocity)
                elif parts[0] == "motor":
                    self._duties = tuple(float(v) for v in parts[2:])
                elif parts[0] == "ready":
                    self.readies += 1
                elif parts[0] == "done":
                    self._done.append(" ".join(parts[1:]))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _wait(self, predicate, what: str, timeout: float = 5.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: predicate() or self.proc.poll() is not None, timeout):
                raise TimeoutError(what)
            if not predicate():
                raise RuntimeError(f"{what}: exited {self.proc.returncode}: {self.proc.stderr.read()}")

    def _command(self, line: str) -> None:
        with self._lock:
            expected = self._done.count(line) + 1
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        self._wait(lambda: self._done.count(line) >= expected, f"no answer to {line!r}")

    def sync(self) -> None:
        """Wait until every line the board printed so far is read (the driver got its ACK after the
        board printed what it did; the stdout reader may not have caught up yet)."""
        if self.proc.poll() is None:
            self._command("sync")

    @property
    def velocity(self) -> tuple[float, float, float]:
        self.sync()
        return self._velocity

    @property
    def duties(self) -> tuple[float, ...]:
        self.sync()
        return self._duties

    def commands(self, kind: str | None = None) -> list[Received]:
        self.sync()
        with self._lock:
            return [r for r in self.history if kind is None or r.command == kind]

    def lines(self) -> list[str]:
        self.sync()
        with self._lock:
            return list(self._lines)

    @property
    def respond(self) -> bool:
        return self._respond

    @respond.setter
    def respond(self, value: bool) -> None:
        self._command("unmute" if value else "mute")
        self._respond = bool(value)

    def inject(self, data: bytes) -> None:
        self._command("inject " + data.hex())

    def unplug(self) -> None:
        self._command("unplug")

    def replug(self) -> None:
        self._command("replug")

    def reboot(self, boot_s: float = 1.0) -> None:
        self._command(f"reboot {int(boot_s * 1000)}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class StdioHarness:
    """firmware/host/stdio_controller: protocol bytes in through a pipe, replies parsed as they come out."""

    def __init__(self, binary: Path, env=None):
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.parser = FrameParser()
        self.replies = []
        self.stderr = b""
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        while True:
            data = self.proc.stdout.read1(65536)
            with self._cond:
                if not data:
                    self._cond.notify_all()
                    return
                self.replies += self.parser.feed(data)
                self._cond.notify_all()

    def _read_err(self) -> None:
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):
            self.stderr += chunk

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def wait_reply(self, predicate, start: int, timeout: float = 10.0):
        """Replies from index `start` up to the first that satisfies predicate (None on timeout/exit)."""
        with self._cond:
            def found():
                return next((i for i in range(start, len(self.replies)) if predicate(self.replies[i])), None)

            self._cond.wait_for(lambda: found() is not None or self.proc.poll() is not None, timeout)
            i = found()
            return None if i is None else self.replies[start:i + 1]

    def close(self) -> str:
        """End of input: the harness prints its summary and exits; returns its stderr."""
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        deadline = time.monotonic() + 2
        while b"frames" not in self.stderr and time.monotonic() < deadline and self.proc.returncode == 0:
            time.sleep(0.01)
        return self.stderr.decode(errors="replace")
