"""The one loader behind `--motor package.module:Class` and `--teleop package.module:Class`
(runtime/hardware.py): each user gets the same three errors, as its own exception, naming the option, the
module (and its file), the class, what was expected and what was found."""

import pytest

from runtime.hardware import TeleopError
from runtime.motors.select import load_motor_class
from runtime.motors.serial_link import MotorError
from runtime.teleop.select import load_teleop_class
from tests.runtime.motors import vendor_motor

USERS = [  # the loader, its exception, its option, the base class a user's class must subclass
    (load_motor_class, MotorError, "--motor", "runtime.hardware.MotorController"),
    (load_teleop_class, TeleopError, "--teleop", "runtime.hardware.TeleopSource"),
]


@pytest.mark.parametrize("load, error, option, base", USERS)
def test_a_module_that_does_not_import(load, error, option, base):
    with pytest.raises(error) as caught:
        load("tests.runtime.no_such_module:Thing")
    assert str(caught.value) == (f"{option} tests.runtime.no_such_module:Thing: cannot import "
                                 f"tests.runtime.no_such_module (ModuleNotFoundError: No module named "
                                 f"'tests.runtime.no_such_module'); is its package installed, or its folder on "
                                 f"PYTHONPATH?")


@pytest.mark.parametrize("load, error, option, base", USERS)
def test_a_module_without_the_class(load, error, option, base):
    with pytest.raises(error) as caught:
        load("tests.runtime.motors.vendor_motor:Missing")
    assert str(caught.value) == (f"{option} tests.runtime.motors.vendor_motor:Missing: module "
                                 "tests.runtime.motors.vendor_motor "
                                 f"({vendor_motor.__file__}) has no Missing")


@pytest.mark.parametrize("name, found", [
    ("NotAMotor", "<class 'tests.runtime.motors.vendor_motor.NotAMotor'>"),  # a class, not the contract's
    ("json", "<module 'json'"),  # not a class at all
])
@pytest.mark.parametrize("load, error, option, base", USERS)
def test_a_name_that_is_not_a_subclass(load, error, option, base, name, found):
    with pytest.raises(error) as caught:
        load(f"tests.runtime.motors.vendor_motor:{name}")
    message = str(caught.value)
    assert message.startswith(f"{option} tests.runtime.motors.vendor_motor:{name}: {found}")
    assert f"is not a subclass of {base} (" in message  # and what the class must provide


def test_a_good_class_is_returned(tmp_path, monkeypatch):
    (tmp_path / "mypad_loader.py").write_text(
        "from runtime.hardware import TeleopSource\n"
        "class Pad(TeleopSource):\n"
        "    def poll(self, now): return []\n"
        "    def command(self, now): return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_teleop_class("mypad_loader:Pad").__name__ == "Pad"
    assert load_motor_class("tests.runtime.motors.vendor_motor:RecordingMotor") is vendor_motor.RecordingMotor
