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

from runtime.backends.base import Backend
from runtime.prompt import position_ids_from_mask


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, bundle, model, variant: str = "eager"):
        super().__init__(bundle, variant)
        self.model = model.eval()
        self.latent_query_num = int(bundle.manifest["prompt"]["latent_query_num"])

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _run(self, graph, feeds):  # the PyTorch model is not split into graphs
        raise NotImplementedError("TorchBackend runs encode_frame/predict_chunk directly")

    def _prompt(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[torch.Tensor, ...]:
        q = self.latent_query_num
        slots = np.zeros_like(input_ids)
        slots[:, 2: 2 + q] = 1  # <s> <image> then the Q image slots: the one layout (runtime/prompt.py)
        arrays = (input_ids, attention_mask, slots, position_ids_from_mask(attention_mask))
        return tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in arrays)

    def encode_frame(self, pixels, input_ids, attention_mask):
        start = time.perf_counter()
        with torch.no_grad():
            embeds = self.model.encode_images(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)))
            mid = time.perf_counter()
            feature = self.model.act_features_from_embeds(embeds, *self._prompt(input_ids, attention_mask))
        end = time.perf_counter()
        self.timings["vision"], self.timings["language"] = mid - start, end - mid
        return feature.numpy()

    def predict_chunk(self, features):
        start = time.perf_counter()
        with torch.no_grad():
            chunk = self.model.predict_chunk(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        self.timings["head"] = time.perf_counter() - start
        return chunk.numpy()
