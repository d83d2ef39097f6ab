"""The systemd watchdog, fed by the control loop alone (issue 29, finding 7): a real Unix datagram socket stands in
for systemd's $NOTIFY_SOCKET, and the unit file is read as systemd reads it."""

import os
import shlex
import socket
import threading
import time

import numpy as np

from runtime.control.config import DriveConfig
from runtime.control.loop import DriveLoop
from runtime.control.safety import SafetyConfig, SafetyGate
from runtime.control.sd_notify import ServiceNotifier
from tests.helpers.drive_doubles import PacedCamera, RecordingDryRun, ScriptedPolicy
from tests.helpers.processes import ROOT


class FakeSystemd:
    """systemd's end of NOTIFY_SOCKET: every datagram, with its arrival time."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.path, self.messages, self._stop = str(path), [], threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def close(self):
        self._stop.set()
        self._thread.join(timeout=1)
        self.sock.close()

    def times(self, message):
        return [t for t, m in self.messages if message in m]


def test_the_notifier_speaks_sd_notify_and_feeds_at_most_twice_a_period(tmp_path):
    systemd = FakeSystemd(tmp_path / "notify")
    now = [0.0]
    env = {"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = ServiceNotifier(env, clock=lambda: now[0])
    notifier.ready()
    for k in range(40):  # 20 Hz for 2 s: fed once per half watchdog (every 1 s), not 40 times
        now[0] = k * 0.05
        notifier.alive()
    notifier.stopping()
    time.sleep(0.2)
    systemd.close()
    sent = [m for _, m in systemd.messages]
    assert sent[0] == "READY=1\nSTATUS=driving" and sent[-1] == "STOPPING=1"
    assert sent.count("WATCHDOG=1") == 2
    assert ServiceNotifier({"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "2000000",
                            "WATCHDOG_PID": "1"}).interval is None  # the watchdog is another process's
    assert not ServiceNotifier({}).enabled  # outside systemd: nothing at all


class HangingMotor(RecordingDryRun):
    """A driver call that hangs for `hang` s at time `at` (a stuck vendor library, a kernel driver)."""

    def __init__(self, at, hang):
        super().__init__()
        self.at, self.hang = at, hang

    def send_velocity(self, vx, vy, wz=0.0):
        if self.at is not None and time.monotonic() >= self.at:
            self.at = None
            time.sleep(self.hang)
        return super().send_velocity(vx, vy, wz)


def test_only_a_ticking_control_loop_feeds_the_watchdog(tmp_path):
    """The loop feeds systemd on its ticks; while a driver call hangs the loop (its other threads still running),
    systemd hears nothing, so WatchdogSec kills and restarts the drive."""
    systemd = FakeSystemd(tmp_path / "notify")
    start = time.monotonic()
    motor = HangingMotor(at=start + 0.6, hang=1.0)
    notifier = ServiceNotifier({"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "200000"})  # fed every 100 ms
    loop = DriveLoop(ScriptedPolicy(latency=0.02), PacedCamera([np.zeros((8, 8, 3), np.uint8)], 30), motor,
                     SafetyGate(SafetyConfig()), DriveConfig(rate=20, status=False), printer=lambda s: None,
                     notifier=notifier)
    threading.Timer(2.0, lambda: loop.request_stop("test over")).start()
    assert loop.run() == 0
    time.sleep(0.1)
    systemd.close()
    fed = systemd.times("WATCHDOG=1")
    ready = systemd.times("READY=1")
    assert ready and ready[0] <= fed[0]  # READY once the loop runs, then the feeding
    gaps = np.diff(fed)
    assert gaps.max() >= 0.9, "fed while the loop was stuck in the driver"
    hung = [g for g in gaps if g >= 0.9]
    # every tick otherwise (rate-limited to 2 per period: 0.1 s apart); the bound is the period itself, the gap
    # systemd would act on, so a loaded machine's late ticks are not mistaken for a loop that stopped feeding
    assert len(hung) == 1 and np.median([g for g in gaps if g < 0.9]) < 0.2
    assert systemd.times("STOPPING=1")


def test_the_unit_is_a_notify_service_whose_main_process_is_the_drive():
    unit = (ROOT / "jetson" / "mobile-vla-drive.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert 0 < float(settings["WatchdogSec"]) <= 10 and float(settings["TimeoutStartSec"]) >= 300
    command = shlex.split(settings["ExecStart"])[-1]
    # the drive must be the main PID (READY and WATCHDOG come from it): exec'd in-process, never forked by runuser
    assert "exec setpriv" in command and "runuser" not in command and "-m runtime.drive" in command
