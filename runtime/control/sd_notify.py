"""systemd's service notifications, from the drive loop: READY once it ticks, WATCHDOG on every tick.

    notifier = ServiceNotifier()      # reads $NOTIFY_SOCKET and $WATCHDOG_USEC; does nothing outside systemd
    notifier.ready(); notifier.alive(); notifier.stopping()

With `Type=notify` and `WatchdogSec=` (jetson/mobile-vla-drive.service),
systemd restarts the drive when the control loop stops ticking for longer
than the watchdog: a hung loop (a stuck driver call, a deadlock) is killed
and restarted disarmed, while the motor controller's own watchdog has already
stopped the wheels. Only the control loop feeds it, so a process whose other
threads run but whose loop is stuck is still restarted. The protocol is a
datagram per message to the Unix socket systemd names in $NOTIFY_SOCKET
(sd_notify(3); a leading "@" is Linux's abstract namespace); the messages are
rate-limited to one every half watchdog period, as sd_notify(3) recommends.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque

log = logging.getLogger(__name__)


class ServiceNotifier:
    def __init__(self, environ=None, clock=time.monotonic):
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET", "")
        if self.address.startswith("@"):
            self.address = "\0" + self.address[1:]
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None  # s between feeds
        self.clock = clock
        self._last = -float("inf")
        self._socket = None
        self.sent: deque[str] = deque(maxlen=100)  # the newest messages sent (the tests read them)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def _notify(self, message: str) -> None:
        if not self.address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message.encode(), self.address)
            self.sent.append(message)
        except OSError as e:  # systemd gone or the socket refused: the watchdog will say so
            log.debug("sd_notify %s failed: %s", message, e)

    def ready(self) -> None:
        self._notify("READY=1\nSTATUS=driving")

    def alive(self) -> None:
        """The control loop ticked: feed the watchdog (at most once per half its period)."""
        if self.interval is None:
            return
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._notify("WATCHDOG=1")

    def stopping(self) -> None:
        self._notify("STOPPING=1")
        if self._socket is not None:
            self._socket.close()
            self._socket = None
