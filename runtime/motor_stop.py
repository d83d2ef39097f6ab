"""Send one STOP to the motor controller and exit: the last word of the systemd unit.

    python -m runtime.motor_stop --serial /dev/mobile-vla-motor

Exit 0 when the controller acknowledged it, 1 otherwise (port missing or busy).
"""

from __future__ import annotations

import argparse
import sys

from runtime.cli import exits_on
from runtime.motor import MotorError, SerialMotorController
from runtime.motor_select import MotorSpec


@exits_on(MotorError)
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serial", required=True)
    ap.add_argument("--baudrate", type=int, default=MotorSpec.baudrate)
    args = ap.parse_args(argv)
    motor = SerialMotorController(args.serial, args.baudrate, ack_timeout_s=0.2).connect()
    try:
        ok = motor.stop()
    finally:
        motor.disconnect()
    print("stopped" if ok else "stop sent, not acknowledged")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
