"""A slower device, faked at the lowest level: ONNX Runtime on the CPU whose vision graph takes longer, or hangs.

    from tests.helpers.slow_backend import DelayedBackend
    server = DelayedBackend(bundle, delay=0.2).activate()   # a loaded GPU server: every frame 200 ms later
    board = DelayedBackend(bundle, delay=0.03).activate()   # a robot's board slower than the server
    server.hang.set(); ...; server.release.set()             # every worker stuck until released

The real graphs still run (the numbers are the real ones); only the time is
added, inside `_run` where a device would spend it, so the backend's own
timings (vision, language) count it as a slower device's would. Ray,
websockets and the drive loop see nothing but a slower backend.
"""

from __future__ import annotations

import threading
import time

from runtime.policy.backends.onnxruntime import OnnxRuntimeBackend


class DelayedBackend(OnnxRuntimeBackend):
    def __init__(self, bundle, delay: float = 0.0, **kw):
        super().__init__(bundle, "cpu", **kw)
        self.delay = delay  # s added to every vision run; change it while serving
        self.hang = threading.Event()  # set: every vision run waits for `release` (a stuck device)
        self.release = threading.Event()
        self.vision_runs = 0  # frames that reached the device

    def _run(self, graph, feeds):
        if graph.startswith("vision"):
            self.vision_runs += 1
            if self.hang.is_set():
                self.release.wait(60)
            if self.delay:
                time.sleep(self.delay)
        return super()._run(graph, feeds)
