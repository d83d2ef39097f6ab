"""A backend says what it computes: backend, variant, precision and the sha256 of the files it runs."""

from __future__ import annotations

import hashlib
import json


def test_identity_names_the_files_run_and_tells_engines_from_onnx(bundle_copy):
    """ORT on the fp32 graphs and TensorRT on engines built from the same bundle: both named, with the files each
    runs; different fingerprints (the engines compute in fp16 on one GPU), stable for the same backend."""
    from runtime.policy.backends.onnxruntime import OnnxRuntimeBackend
    from runtime.policy.backends.tensorrt import TensorRTBackend
    from runtime.policy.bundle import load_bundle

    manifest = json.loads((bundle_copy / "bundle.json").read_text())
    for graph in ("vision", "language", "action_head"):  # engine records as runtime.engines writes them
        data = f"{graph} engine".encode()
        (bundle_copy / f"{graph}.fp16.engine").write_bytes(data)
        manifest["engines"].append({"graph": graph, "file": f"{graph}.fp16.engine", "precision": "fp16",
                                    "tensorrt_version": "10.3.0", "gpu": "Orin", "builder": "test"})
        manifest["files"][f"{graph}.fp16.engine"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    bundle = load_bundle(bundle_copy, verify="full")

    ort, trt = OnnxRuntimeBackend(bundle).identity(), TensorRTBackend(bundle).identity()
    fp32 = manifest["variants"]["fp32"]["files"]
    assert (ort["backend"], ort["precision"]) == ("ort-cpu", "fp32")
    assert ort["graphs"] == {g: manifest["files"][f]["sha256"] for g, f in fp32.items()}
    assert (trt["backend"], trt["precision"]) == ("trt", "fp16")
    assert trt["graphs"]["vision"] == hashlib.sha256(b"vision engine").hexdigest()
    assert ort["fingerprint"] != trt["fingerprint"] and OnnxRuntimeBackend(bundle).identity() == ort
