"""`import pycuda` in a subprocess -> the fake of tests/fakes/gpu.py (see ../README.md)."""
