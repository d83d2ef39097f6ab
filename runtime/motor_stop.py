"""Send one stop to the motor side and exit: the last word of the systemd unit, or a person's.

    python -m runtime.motor_stop --serial /dev/mobile-vla-motor
    python -m runtime.motor_stop --motor ros2 --cmd-vel-stamped          # zeros on cmd_vel
    python -m runtime.motor_stop --motor mypackage.base:MyBase           # a vendor class's stop()

Takes the drive's motor options (runtime.motors.select), so whatever `--motor`
the drive used, the same flags stop it. Exit 0 when the stop is known to
have gone out (acknowledged by our serial controller; published on ROS 2),
1 otherwise (port missing or busy, a link that refused). A STOP needs no
configuration check: our serial controller is stopped whatever it reports
(as if --allow-unverified-controller, and without --wheels), and a port
another program holds (a running drive) is named with its holder.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from runtime.cli import exits_on
from runtime.logs import add_log_level_argument, setup_logging
from runtime.motors.select import MotorSpec, add_motor_arguments, open_motor
from runtime.motors.serial_link import MotorError


@exits_on(MotorError)
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_motor_arguments(ap)
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    # a board of another configuration (or one too old to say) must still be stopped: nothing here moves it
    spec = dataclasses.replace(MotorSpec.from_args(args), allow_unverified_controller=True, wheels=None)
    motor = open_motor(spec)
    try:
        ok = motor.stop()
    finally:
        motor.disconnect()  # every motor side zeroes again on its way out
    print("stopped" if ok else "stop sent, not acknowledged")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
