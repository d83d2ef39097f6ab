"""The robot's policy with vision and language on a policy server, and its own engines as the fallback.

    from runtime.policy.remote import RemoteConfig, RemoteEncoder, RemotePolicy
    encoder = RemoteEncoder(RemoteConfig("ws://10.0.0.5:8000", timeout=0.2)).start()
    policy = RemotePolicy(bundle, local_backend, encoder, instruction="reach the bottle on the left")
    step = policy.infer(frame_bgr)      # the same PolicyStep as the onboard Policy; policy.source: "remote"/"onboard"
    encoder.close()

    python -m runtime.drive --policy ws://10.0.0.5:8000 --fallback-bundle bundle/ ...

The split (docs/serving.md, "Why the split"): the server computes the
expensive, stateless part, frame + instruction -> ACT feature, and the robot
keeps its ring of features and runs the small action head itself. So any
server replica can answer any frame, and a switch to the onboard engines
keeps the ring intact: the onboard vision and language push the next
feature into the same ring, and the chunk after the switch is the one the
robot would have computed all along (same bundle, checked by the model
identity in the server's metadata).

The frame is resized to the bundle's image size on the robot (RGB, 150 KB
for 224 x 224 instead of 2.7 MB for 1280 x 720), optionally JPEG-encoded.
A request not answered within `timeout` (or a closed connection) makes this
step run on the onboard engines, with the same frame, at once: the reply
that comes later is dropped by its id. The connection is then dropped and a
background thread reconnects every `retry_interval`; the first step after it
is back goes to the server again. Each switch is logged; `source` and the
timings (`network` = round trip minus the server's own time) say which
policy drove each step. The bundle's engines are always loaded here: the
head runs on the robot anyway, and vision and language are the fallback.

websockets (its threading client) and msgpack only: no torch, no asyncio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from runtime.policy.behaviours import with_behaviours
from runtime.policy.bundle import Bundle, load_bundle
from runtime.policy.onboard import Policy
from runtime.policy.preprocess import resize_rgb
from runtime.policy.wire import PROTOCOL, PROTOCOL_VERSION, WireError, model_identity, packb, unpackb

log = logging.getLogger(__name__)


class RemoteUnavailable(RuntimeError):
    """The server did not answer this request in time (or is not connected); the step runs onboard."""


class RemoteRefused(RuntimeError):
    """The server is not one this robot may use (another model, another protocol version); never retried."""


@dataclass(frozen=True)
class RemoteConfig:
    url: str  # ws://HOST:PORT of `python -m serve`
    timeout: float = 0.15  # s: a reply later than this counts as lost and the step runs onboard
    connect_timeout: float = 2.0  # s: opening handshake plus the metadata message
    retry_interval: float = 0.5  # s between reconnect attempts while the onboard engines drive
    api_key: str | None = None  # sent as 'Authorization: Api-Key KEY'
    jpeg_quality: int | None = None  # None: raw RGB pixels; 1..100: JPEG at this quality (lossy: not bit-identical)


class RemoteEncoder:
    """Frame (S x S RGB) + prompt -> ACT feature from the server, with reconnects in the background."""

    def __init__(self, config: RemoteConfig, expected_model: str | None = None):
        if not config.url.startswith(("ws://", "wss://")):
            raise ValueError(f"--policy: expected ws://HOST:PORT, found {config.url!r}")
        self.config = config
        self.expected_model = expected_model  # model identity this robot's head needs; None: accept any
        self.metadata: dict | None = None
        self.refused: str | None = None  # why the server may never be used (set once, then no more retries)
        self._stack: contextlib.ExitStack | None = None
        self._ws = None
        self._lock = threading.Lock()  # guards _ws / _stack between the caller and the reconnect thread
        self._next_id = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._reconnect_loop, name="remote-reconnect", daemon=True)

    def start(self, wait: bool = True) -> RemoteEncoder:
        """Start reconnecting in the background; `wait`: try once now, so the first step can go remote."""
        if wait:
            self._connect_once()
        self._thread.start()
        return self

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # -- connection ----------------------------------------------------------------------
    def _connect_once(self) -> bool:
        from websockets.sync.client import connect  # noqa: PLC0415  websockets: ~200 ms; --policy ws:// only

        cfg = self.config
        headers = {"Authorization": f"Api-Key {cfg.api_key}"} if cfg.api_key else None
        stack = contextlib.ExitStack()
        try:
            ws = stack.enter_context(connect(cfg.url, open_timeout=cfg.connect_timeout, compression=None,
                                             max_size=None, additional_headers=headers, close_timeout=0.2))
            meta = unpackb(ws.recv(timeout=cfg.connect_timeout))
            self._check_metadata(meta)
        except RemoteRefused as e:
            stack.close()
            self.refused = str(e)
            log.error("policy server %s refused: %s; driving on the onboard engines only", cfg.url, e)
            return False
        except Exception as e:  # refused, reset, timed out, DNS, a bad handshake: try again later
            stack.close()
            log.debug("policy server %s not reachable: %s: %s", cfg.url, type(e).__name__, e)
            return False
        with self._lock:
            self._stack, self._ws, self.metadata = stack, ws, meta
        log.info("policy server %s connected (%s)", cfg.url, meta.get("backend"))
        return True

    def _check_metadata(self, meta) -> None:
        if not isinstance(meta, dict) or meta.get("protocol") != PROTOCOL:
            raise RemoteRefused(f"not a {PROTOCOL} server (its first message: {str(meta)[:80]})")
        if meta.get("protocol_version") != PROTOCOL_VERSION:
            raise RemoteRefused(f"protocol version {meta.get('protocol_version')}, this robot speaks "
                                f"{PROTOCOL_VERSION}: update the older side")
        if self.expected_model is not None and meta.get("model_sha256") != self.expected_model:
            raise RemoteRefused(f"the server runs model {str(meta.get('model_sha256'))[:12]}, this robot's bundle is "
                                f"{self.expected_model[:12]}: its features would not fit this head; serve the same "
                                f"bundle")

    def _drop(self, reason: str) -> None:
        with self._lock:
            stack, self._stack, self._ws = self._stack, None, None
        if stack is not None:
            log.warning("policy server %s lost (%s): the onboard engines drive until it answers again",
                        self.config.url, reason)
            threading.Thread(target=stack.close, daemon=True).start()  # a close handshake may wait: not here
        self._wake.set()

    def _reconnect_loop(self) -> None:
        while not self._stop.is_set() and self.refused is None:
            if self._ws is None:
                self._connect_once()
            self._wake.wait(self.config.retry_interval)
            self._wake.clear()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.config.connect_timeout + 1)
        with self._lock:
            stack, self._stack, self._ws = self._stack, None, None
        if stack is not None:
            stack.close()

    # -- requests ---------------------------------------------------------------------------
    def _image_fields(self, rgb: np.ndarray) -> dict:
        q = self.config.jpeg_quality
        if q is None:
            return {"image": rgb}
        import cv2  # noqa: PLC0415  cv2: JPEG frames only

        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return {"jpeg": data.tobytes()}

    def feature(self, rgb: np.ndarray, prompt: str | None) -> tuple[np.ndarray, dict]:
        """(1, D) feature and timings (s: network, server); RemoteUnavailable when the server cannot answer now."""
        ws = self._ws
        if ws is None:
            raise RemoteUnavailable(self.refused or "not connected")
        self._next_id += 1
        rid = self._next_id
        start = time.perf_counter()
        deadline = start + self.config.timeout
        try:
            ws.send(packb({"type": "feature", "id": rid, "prompt": prompt, **self._image_fields(rgb)}))
            while True:
                raw = ws.recv(timeout=max(deadline - time.perf_counter(), 0.0))
                if isinstance(raw, str):  # an error reply (JSON text)
                    error = json.loads(raw)
                    if error.get("id") in (rid, None):
                        raise RemoteUnavailable(f"server error: {error.get('error')}")
                    continue
                reply = unpackb(raw)
                if reply.get("id") == rid:
                    break  # an older id: the late reply of a request that already ran onboard
        except TimeoutError:
            self._drop(f"no reply within {self.config.timeout * 1e3:.0f} ms")
            raise RemoteUnavailable(f"no reply within {self.config.timeout * 1e3:.0f} ms") from None
        except RemoteUnavailable:
            raise
        except (WireError, ValueError, AttributeError) as e:
            self._drop(f"unreadable reply: {e}")
            raise RemoteUnavailable(f"unreadable reply: {e}") from None
        except Exception as e:  # ConnectionClosed, OSError: the link is gone
            self._drop(f"{type(e).__name__}: {e}")
            raise RemoteUnavailable(f"{type(e).__name__}: {e}") from None
        round_trip = time.perf_counter() - start
        server_timing = reply.get("server_timing", {})
        server_s = float(server_timing.get("total_ms", 0.0)) / 1e3
        timings = {k: float(v) / 1e3 for k, v in reply.get("policy_timing", {}).items()}
        timings.update(network=max(round_trip - server_s, 0.0), server=server_s,
                       queue=float(server_timing.get("queue_ms", 0.0)) / 1e3)
        feature = np.asarray(reply["feature"], np.float32)
        return feature, timings


class RemotePolicy(Policy):
    """A runtime Policy whose feature step asks the server first: same ring and pacing, same head, same `infer`."""

    def __init__(self, bundle: Bundle, backend, encoder: RemoteEncoder, instruction: str | None = None):
        super().__init__(bundle, backend, instruction=instruction)
        self.prompt = instruction  # what the server is sent: None means the bundle's default, as here
        self.encoder = encoder
        self.source = ""  # which engines encoded the newest frame: "remote" or "onboard" ("" before the first)
        self.switches = 0  # remote <-> onboard changes after the first step

    def _use(self, source: str, why: str = "") -> None:
        if source != self.source:
            self.switches += bool(self.source)
            log.info("policy: %s%s", source, f" ({why})" if why else "")
        self.source = source

    def feature(self, image: np.ndarray) -> tuple[np.ndarray, dict]:
        """The ACT feature from the server; on loss or lateness from the onboard engines, for the same image.
        Policy.encode puts it in the ring either way, so the ring never notices a switch."""
        t0 = time.perf_counter()
        p = self.preprocess_config
        rgb = resize_rgb(image, p.channel_order, p.size, "rgb")  # on the robot: 150 KB on the wire, not megabytes
        resized = time.perf_counter() - t0
        try:
            feature, timings = self.encoder.feature(rgb, self.prompt)
        except RemoteUnavailable as e:
            self._use("onboard", str(e))
            return super().feature(image)
        self._use("remote")
        timings["preprocess"] = resized + timings.get("preprocess", 0.0)
        return feature, timings


def add_remote_arguments(ap: argparse.ArgumentParser) -> None:
    d = RemoteConfig
    ap.add_argument("--policy", metavar="ws://HOST:PORT",
                    help="vision and language on this policy server (python -m serve); the ring and the head run "
                         "here, and --bundle/--fallback-bundle (the same bundle) drives when the server is lost")
    ap.add_argument("--policy-timeout", type=float, default=d.timeout,
                    help="--policy: seconds before a reply counts as lost and the step runs onboard")
    ap.add_argument("--policy-retry", type=float, default=d.retry_interval,
                    help="--policy: seconds between reconnect attempts")
    ap.add_argument("--policy-api-key", default=d.api_key, help="--policy: the server's --api-key")
    ap.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality,
                    help="--policy: send frames as JPEG at this quality (1-100) instead of raw pixels")


def remote_config_from_args(args: argparse.Namespace) -> RemoteConfig | None:
    if not getattr(args, "policy", None):
        return None
    return RemoteConfig(args.policy, timeout=args.policy_timeout, retry_interval=args.policy_retry,
                        api_key=args.policy_api_key, jpeg_quality=args.jpeg_quality)


@contextlib.contextmanager
def open_remote_policy(spec, remote: RemoteConfig):
    """runtime.policy.select.open_policy's remote twin: a RemotePolicy on spec.bundle's engines, behaviours around
    it; the connection and the backend are released on leaving."""
    from runtime.policy.backends.registry import (  # noqa: PLC0415  backends load with the bundle, not for --help
        make_backend,
    )

    bundle = load_bundle(spec.bundle, verify=spec.verify)
    encoder = RemoteEncoder(remote, expected_model=model_identity(bundle.manifest))
    backend = make_backend(bundle, spec.backend, variant=spec.variant).activate()
    try:
        encoder.start()
        if not encoder.connected:
            log.warning("policy server %s not reachable yet: the onboard engines drive until it answers", remote.url)
        policy = RemotePolicy(bundle, backend, encoder, instruction=spec.instruction)
        yield with_behaviours(policy, spec.chunk_mode, spec.discrete)
    finally:
        encoder.close()
        backend.deactivate()
