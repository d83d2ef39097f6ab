"""The serial port under our motor controller protocol: opened without resetting the board, framed writes with
a sequence number, blocking waits for a reply, and a port that comes back after an unplug.

    link = SerialLink("/dev/ttyUSB0", reconnect_s=0.2).open()     # MotorError with what to check (or who holds it)
    link.drain(on_ready=...)                                      # READY frames already waiting (the board restarted)
    if link.write(Command.SET_VELOCITY, payload):                 # False (and closed) when the port went away
        reply = link.await_reply(Command.ACK, 0.05, on_ready=...) # the frame answering link.seq, or None
    link.close()

What is said on the link (the protocol's conversation, the controller's
configuration, counting what went unanswered) is
runtime/motors/serial_controller.py; the frames are runtime/motors/protocol.py.

Opening the port drives neither DTR nor RTS (pyserial asserts both by
default, which resets Arduino, CH340 and FTDI boards through their
auto-reset capacitor and holds ESP32 boards in reset). It is opened
exclusively, twice over: pyserial's `exclusive=True` takes a `flock` on it
(for every opener that asks, root included; the kernel drops it when the
holder exits, even on SIGKILL, and /proc/locks names the holder), and
TIOCEXCL makes the kernel refuse any other open() of the tty (EBUSY) before
it raises DTR, so a second program cannot even reset an auto-reset board
(root bypasses TIOCEXCL: the drive runs as a user, jetson/). TIOCEXCL stays
on a tty while anyone holds it open (a pty's other side does), so `close`
clears it first. A second opener gets a MotorError naming the port and the
process that holds it. When the port goes
away (cable pulled, USB reset) a write or a read closes it, and
`ensure_open` reopens the same path at most every `reconnect_s`
(`reconnects` counts). The reply wait blocks in select() on the port, so a
silent controller costs one system call per command, not a poll every
0.5 ms; bad bytes never raise (the parser drops them).
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import termios
import time
from pathlib import Path

from runtime.hardware import DeviceError, DeviceNotConnectedError
from runtime.motors.protocol import Command, FrameParser, encode_frame


class MotorError(DeviceError):
    """A port that cannot be used; the message says what to do."""


class NotConnectedError(MotorError, DeviceNotConnectedError):
    pass


def port_holder(port: str, locks: Path = Path("/proc/locks")) -> str | None:
    """Who holds the flock on `port` ("pid 1234 (python -m runtime.drive ...)"), from /proc/locks; None when
    nobody visible does (another mount namespace, no /proc)."""
    try:
        st = os.stat(port)
        wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in locks.read_text().splitlines():
            fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 00:1a:3 0 EOF" ("->" marks a waiter)
            if "FLOCK" in fields and wanted in fields and "->" not in fields:
                pid = fields[fields.index(wanted) - 1]
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    cmd = ""
                return f"pid {pid}" + (f" ({cmd.strip()})" if cmd.strip() else "")
    except (OSError, ValueError):
        pass
    return None


def explain_open_error(port: str, err: Exception) -> str:
    code = getattr(err, "errno", None)
    text = str(err)
    if code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text or "resource busy" in text:
        holder = port_holder(port) or "another process (fuser -v " + port + " names it)"
        return (f"serial port {port} is in use by {holder}: it is opened exclusively because two programs "
                f"commanding one board fight each other, and an e-stop in one does not stop the other. Stop that "
                f"program first (a drive zeroes the motors when it exits; a pre-flight or runtime.motor_stop "
                f"needs the port free)")
    if code == errno.ENOENT or "No such file" in text or "could not open port" in text and "No such" in text:
        return (f"serial port {port} not found: is the motor controller plugged in and powered? "
                f"(ls /dev/ttyUSB* /dev/ttyACM*; with jetson/99-mobile-vla.rules it is /dev/mobile-vla-motor)")
    if code == errno.EACCES or "Permission denied" in text:
        return (f"permission denied on {port}: add yourself to the dialout group "
                f"(sudo usermod -aG dialout $USER, then log out and in) or install the udev rule "
                f"(sudo cp jetson/99-mobile-vla.rules /etc/udev/rules.d/ && sudo udevadm control --reload)")
    return f"cannot open serial port {port}: {err}"


def open_serial_port(port: str, baudrate: int):
    """Open without driving DTR or RTS: set both off before open() (pyserial's default asserts them,
    and the auto-reset circuit of Arduino/CH340/FTDI boards turns that edge into a reset)."""
    import serial  # noqa: PLC0415  pyserial: the serial link only (not dry-run, ROS 2)

    ser = serial.Serial()
    ser.port = port
    ser.baudrate = baudrate
    ser.timeout = 0  # reads never block: the ack wait blocks in select() instead
    ser.write_timeout = 0.1
    ser.dsrdtr = False  # hardware handshake would drive DTR/RTS itself
    ser.rtscts = False
    ser.dtr = False
    ser.rts = False
    ser.exclusive = True  # flock(LOCK_EX | LOCK_NB) right after the open, before pyserial touches the lines
    ser.open()
    try:  # the kernel now refuses other opens (EBUSY) before they raise DTR; not a tty (a test's pipe): no-op
        fcntl.ioctl(ser.fileno(), termios.TIOCEXCL)
    except OSError as e:
        if e.errno not in (errno.ENOTTY, errno.EINVAL):
            ser.close()
            raise
    return ser


def close_serial_port(ser) -> None:
    """Clear TIOCEXCL, then close: a tty that someone else keeps open (a pty's other side) keeps the flag after
    our close, and would refuse our own reopen."""
    try:
        fcntl.ioctl(ser.fileno(), termios.TIOCNXCL)
    except Exception:  # already gone (EIO after an unplug), closed, or not a tty
        pass
    ser.close()


class SerialLink:
    """One port: `open`, `write` a frame, `await_reply` to it, `close`; reopened by `ensure_open`."""

    def __init__(self, port: str, baudrate: int = 115200, reconnect_s: float = 0.2):
        self.port = str(port)
        self.baudrate = baudrate
        self.reconnect_s = reconnect_s  # s between two attempts to reopen a port that went away
        self.serial = None  # the pyserial port while open
        self.parser = FrameParser()
        self.seq = 0  # sequence number of the frame written last
        self.reconnects = 0  # reopened after it went away
        self._last_attempt = 0.0

    @property
    def is_open(self) -> bool:
        return self.serial is not None

    def open(self) -> SerialLink:
        import serial  # noqa: PLC0415  pyserial: the serial link only (not dry-run, ROS 2)

        self._last_attempt = time.monotonic()
        try:
            self.serial = open_serial_port(self.port, self.baudrate)
        except (serial.SerialException, OSError) as e:
            raise MotorError(explain_open_error(self.port, e)) from e
        self.parser = FrameParser()
        return self

    def close(self) -> None:
        if self.serial is not None:
            try:
                close_serial_port(self.serial)
            except Exception:
                pass
            self.serial = None

    def ensure_open(self) -> bool:
        """Open, or reopened now (at most every `reconnect_s`: the control loop must not stall on a dead port)."""
        if self.is_open:
            return True
        if time.monotonic() - self._last_attempt < self.reconnect_s:
            return False
        try:
            self.open()
        except MotorError:
            return False
        self.reconnects += 1
        return True

    def write(self, kind: int, payload: bytes) -> bool:
        """Send one frame with the next sequence number; False (and closed) when the port is gone."""
        if not self.ensure_open():
            return False
        self.seq = (self.seq + 1) & 0xFF
        try:
            self.serial.write(encode_frame(kind, self.seq, payload))
        except Exception as e:  # SerialException, OSError(EIO) when the pty/USB goes away
            if isinstance(e, OSError) or type(e).__name__ in ("SerialException", "SerialTimeoutException"):
                self.close()
                return False
            raise
        return True

    def drain(self, on_ready=None) -> None:
        """Read what already waits on the port, without blocking: each READY (the board restarted while nobody
        was reading) goes to `on_ready(frame)`; late replies to earlier commands are dropped. Called before a
        motion command, so a board that restarted is seen before it is told to move. A port that went away
        closes the link."""
        if self.serial is None:
            return
        try:
            waiting = self.serial.in_waiting
            frames = self.parser.feed(self.serial.read(waiting)) if waiting else []
        except Exception as e:
            if isinstance(e, (OSError, ValueError)) or type(e).__name__ == "SerialException":
                self.close()
                return
            raise
        for frame in frames:
            if frame.type == Command.READY and on_ready is not None:
                on_ready(frame)

    def await_reply(self, want: int, timeout_s: float, on_ready=None, accept_ready: bool = False):
        """Block until the reply to `seq` arrives (the frame: `want` or a NACK), or the timeout (None). Every
        READY frame on the way (the board booted) goes to `on_ready(frame)`; with `accept_ready` it also ends
        the wait. A port that went away closes the link and returns None."""
        deadline = time.monotonic() + timeout_s
        try:
            fd = self.serial.fileno()
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                readable, _, _ = select.select([fd], [], [], remaining)
                if not readable:
                    return None
                data = self.serial.read(self.serial.in_waiting or 1)
                for frame in self.parser.feed(data):
                    if frame.type == Command.READY:
                        if on_ready is not None:
                            on_ready(frame)
                        if accept_ready:
                            return frame
                    elif frame.seq == self.seq and frame.type in (want, Command.NACK):
                        return frame
        except Exception as e:
            if isinstance(e, (OSError, ValueError)) or type(e).__name__ == "SerialException":
                self.close()  # readable but no data: the other end is gone
                return None
            raise
