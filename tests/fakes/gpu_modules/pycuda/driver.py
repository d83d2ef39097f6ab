"""`import pycuda.driver` in a subprocess -> the fake driver of tests/fakes/gpu.py (see ../README.md)."""
from tests.fakes import gpu as _gpu

_driver = _gpu.make_pycuda_driver()


def __getattr__(name):
    return getattr(_driver, name)
