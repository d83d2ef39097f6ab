"""Controllers of older (or broken) firmware, as the emulator with one thing changed: what a host meets in the
field, for the configuration check at connect (tests/runtime/motors/test_serial_controller.py, test_preflight.py).

    board = OlderController(link=tmp_path / "motor").start()     # NACK 2 to QUERY_INFO
"""

from runtime.motors.protocol import Command, info_payload
from sim.controller_emulator import ControllerEmulator


class OlderController(ControllerEmulator):
    """A controller from before QUERY_INFO: NACK 2 to it, as the protocol says, and no motion gate."""

    def _handle(self, frame):
        self.info_asked = True  # it has no gate: motion before any QUERY_INFO is applied
        if frame.type == Command.QUERY_INFO:
            self._reply(Command.NACK, frame.seq, bytes([frame.seq, 2]))
            return
        super()._handle(frame)


class SilentOnInfo(ControllerEmulator):
    """Answers everything but QUERY_INFO (broken firmware, or a board that drops it)."""

    def _handle(self, frame):
        self.info_asked = True
        if frame.type != Command.QUERY_INFO:
            super()._handle(frame)


class InfoWithoutBaseKind(ControllerEmulator):
    """A controller from before the base kind: the first 16 bytes of INFO."""

    def _handle(self, frame):
        if frame.type == Command.QUERY_INFO:
            self.info_asked = True
            self._reply(Command.INFO, frame.seq, info_payload(self.wheels, 500, self.limits)[:16])
            return
        super()._handle(frame)
