"""A user's class named on the command line as `package.module:ClassName`, imported and checked.

    cls = load_user_class("mypackage.base:MyBase", "--motor", MotorController, MotorError,
                          needs="connect, disconnect, is_connected, send_velocity -> SentCommand, stop")
    motor = cls()

Shared by `--motor` (runtime/motor_select.py) and `--teleop` (runtime/teleop_select.py). Every error is
raised as the caller's exception class and names the option, the module (and its file), the class, what
was expected and what was found. Importing the module runs its code: name only code you trust.
"""

from __future__ import annotations

import importlib


def check_user_class(cls, spec: str, option: str, base: type, error: type[Exception], needs: str = "") -> type:
    """`cls` when it is a subclass of `base`, else `error` saying what it is and what it must provide."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise error(f"{option} {spec}: {cls!r} is not a subclass of {base.__module__}.{base.__qualname__}"
                    + (f" ({needs})" if needs else ""))
    return cls


def load_user_class(spec: str, option: str, base: type, error: type[Exception], needs: str = "") -> type:
    """`package.module:ClassName` -> the class, a subclass of `base`; `error(message)` when the module does
    not import, has no such name, or the name is not such a class. `option` (e.g. "--motor") starts each
    message; `needs` lists what the class must provide."""
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise error(f"{option} {spec}: cannot import {module_name} ({type(e).__name__}: {e}); is its package "
                    f"installed, or its folder on PYTHONPATH?") from e
    cls = getattr(module, class_name, None)
    if cls is None:
        raise error(f"{option} {spec}: module {module_name} ({module.__file__}) has no {class_name}")
    return check_user_class(cls, spec, option, base, error, needs)
