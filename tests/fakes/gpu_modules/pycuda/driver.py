"""`import pycuda.driver` in a subprocess -> the fake driver of tests/fakes/gpu.py (see ../README.md)."""
from tests.fakes import gpu as _gpu

_driver = _gpu.make_pycuda_driver()


def Stream(flags=0):  # noqa: N802  (pycuda's class name) registered so a fake enqueue sees a capture
    s = _gpu.Stream(flags)
    _gpu.FakeTensorRT.streams[s.handle] = s
    return s


def __getattr__(name):
    return getattr(_driver, name)
