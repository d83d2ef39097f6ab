"""`import tensorrt` in a subprocess -> the fake TensorRT of tests/fakes/gpu.py (see README.md here).

A real module (with a spec, which torch and transformers probe for) whose attributes are the fake's."""
from tests.fakes import gpu as _gpu


def __getattr__(name):
    return getattr(_gpu.FakeTensorRT, name)
