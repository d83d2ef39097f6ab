"""PyTorch as a runtime backend: the checkpoint a bundle came from, behind the runtime's Backend interface.

    model, tokenizer, _ = load_checkpoint(Path("checkpoint"), merge=True)
    backend = TorchBackend(bundle, model).activate()
    policy = Policy(bundle, backend)                 # the same Policy the robot runs, PyTorch underneath

It lets anything that takes a runtime Policy (sim.evaluate's closed loop,
the drive loop) run on the un-exported model, so "the bundle behaves like the
model it was exported from" is checked on whole episodes, not only on the
parity inputs. It lives in export/ because runtime/ never imports torch.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from export.graphs import LanguageGraph
from runtime.policy.backends.base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, bundle, model, variant: str = "eager"):
        super().__init__(bundle, variant)
        self.model = model.eval()
        self.language = LanguageGraph(self.model)  # the exported graph's own slot mask and position ids

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _run(self, graph, feeds):  # the PyTorch model is not split into graphs
        raise NotImplementedError("TorchBackend runs encode_frame/predict_chunk directly")

    def _prompt(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in (input_ids, attention_mask))

    def encode_frame(self, pixels, input_ids, attention_mask):
        start = time.perf_counter()
        with torch.no_grad():
            embeds = self.model.encode_images(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)))
            mid = time.perf_counter()
            feature = self.language(*self._prompt(input_ids, attention_mask), embeds)
        end = time.perf_counter()
        self.timings["vision"], self.timings["language"] = mid - start, end - mid
        return feature.numpy()

    def predict_chunk(self, features):
        start = time.perf_counter()
        with torch.no_grad():
            chunk = self.model.predict_chunk(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        self.timings["head"] = time.perf_counter() - start
        return chunk.numpy()
