"""The robot's link to a policy server: frame + instruction -> ACT feature, and when the server is used.

    encoder = RemoteEncoder(RemoteConfig("ws://10.0.0.5:8000"), model_identity(bundle.manifest),
                            OnboardReference(bundle, local_backend)).start()
    feature, timings = encoder.feature(rgb, prompt, deadline)   # RemoteUnavailable: this step runs onboard
    encoder.close()

When the server drives, and when it does not (docs/serving.md, "The robot
client"): a slow or lost server never makes a step slower than the onboard
engines would.

- A request carries its deadline, the frame's capture time + `timeout`
  (`deadline_ms`, what is left of it when sent): the server never starts a
  request past it, and a reply not back by then makes this step run on the
  onboard engines, with the same frame, at once.
- After a lost reply (or a closed connection, an error) the robot stays on
  its onboard engines for `retry_interval`; then a background thread
  (re)connects and sends `probes` probe frames: only when each is answered
  within the budget (`timeout`, and `max_slowdown` x the onboard engines'
  median step) does the next step go to the server again.
- A server that answers, but whose median step over the last `window`
  steps is slower than `max_slowdown` x the onboard median, is left the same
  way (its connection kept for the probes).

On connect the server's metadata must name the same model (model_sha256)
and protocol version, or it is never used. Its `compute` (backend,
precision, graph or engine fingerprint) is compared with this robot's own
(`OnboardReference`); when they differ the robot measures the difference on
a test frame and warns (`mismatch="warn"`) or refuses the server
(`"refuse"`). The policy around it: runtime/policy/remote.py.

websockets (its threading client) and msgpack only: no torch, no asyncio.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import ssl
import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np

from runtime.policy.bundle import Bundle
from runtime.policy.onboard import Policy
from runtime.policy.preprocess import resize_rgb
from runtime.policy.wire import (
    PROTOCOL,
    PROTOCOL_VERSION,
    WireError,
    packb,
    unpackb,
)

log = logging.getLogger(__name__)
MISMATCH = ("warn", "refuse")


class RemoteUnavailable(RuntimeError):
    """The server cannot answer this step (not ready, late, lost); the step runs onboard."""


class RemoteRefused(RuntimeError):
    """The server is not one this robot may use (another model, another protocol version); never retried."""


@dataclass(frozen=True)
class RemoteConfig:
    url: str  # ws://HOST:PORT (or wss://) of `python -m serve`
    timeout: float = 0.15  # s from the frame's capture: a reply later than this is lost and the step runs onboard
    connect_timeout: float = 2.0  # s: opening handshake plus the metadata message
    retry_interval: float = 0.5  # s on the onboard engines after a lost or slow server before probing it again
    api_key: str | None = None  # sent as 'Authorization: Api-Key KEY'
    jpeg_quality: int | None = None  # None: raw RGB pixels; 1..100: JPEG at this quality (lossy: not bit-identical)
    max_slowdown: float = 1.2  # leave a server whose median step is over this x the onboard median (inf: never)
    compare_steps: int = 10  # steps the remote and onboard medians are taken over
    probes: int = 3  # probes in a row answered within budget before the robot goes back to the server
    mismatch: str = "warn"  # the server computes otherwise than this robot (metadata's compute): warn or refuse
    ca_file: str | None = None  # wss://: a CA certificate (PEM) to trust, e.g. the server's self-signed one


def test_frame(size: int) -> np.ndarray:
    """A fixed (size, size, 3) uint8 frame with gradients, edges and texture: the same on every robot and run."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    noise = np.random.default_rng(0).normal(0, 12, (size, size, 3))
    image = np.stack([255 * xx, 255 * yy, 128 + 100 * np.sin(12 * xx * yy)], axis=-1) + noise
    image[size // 3: size // 2, size // 4: 3 * size // 4] = (40, 160, 220)  # a box: edges at known places
    return np.clip(image, 0, 255).astype(np.uint8)


class OnboardReference:
    """What this robot computes onboard, to hold a server against: its backend's identity, one test frame's
    ACT feature and chunk, and how long the onboard engines take for a frame (median of 3 after a warm-up)."""

    def __init__(self, bundle: Bundle, backend, repeats: int = 3):
        """Runs the onboard graphs repeats + 1 times (the first warms them up)."""
        p = bundle.preprocess
        self.bundle, self.backend = bundle, backend
        self.identity = backend.identity()
        self.image = test_frame(p.size)  # in the camera's order, like a frame
        self.rgb = resize_rgb(self.image, p.channel_order, p.size, "rgb")  # what the server is sent
        policy = Policy(bundle, backend)
        times = []
        for _ in range(repeats + 1):
            self.feature, timings = policy.feature(self.image)
            times.append(timings["vision"] + timings["language"])
        self.seconds = statistics.median(times[1:])  # the graphs a server would run instead (not the resize)
        self.chunk = self._chunk(self.feature)

    def _chunk(self, feature: np.ndarray) -> np.ndarray:
        return self.backend.predict_chunk(np.asarray(feature, np.float32).reshape(1, 1, -1))[0] * \
            self.bundle.action_range

    def difference(self, feature: np.ndarray) -> tuple[float, float]:
        """(max |feature difference|, max |chunk difference| in robot units) of a server's test-frame feature."""
        feature = np.asarray(feature, np.float32).reshape(self.feature.shape)
        return float(np.abs(feature - self.feature).max()), float(np.abs(self._chunk(feature) - self.chunk).max())


def _describe(compute) -> str:
    if not isinstance(compute, dict):
        return "an unnamed computation (a server that does not send 'compute')"
    return (f"{compute.get('backend')} {compute.get('precision')} ("
            f"{str(compute.get('fingerprint', ''))[:12]})")


class RemoteEncoder:
    """Frame (S x S RGB) + prompt -> ACT feature from the server; the onboard/remote decision; probes and
    reconnects on a background thread."""

    def __init__(self, config: RemoteConfig, expected_model: str | None = None,
                 reference: OnboardReference | None = None):
        if not config.url.startswith(("ws://", "wss://")):
            raise ValueError(f"--policy: expected ws://HOST:PORT or wss://HOST:PORT, found {config.url!r}")
        if config.mismatch not in MISMATCH:
            raise ValueError(f"--policy-mismatch must be one of {', '.join(MISMATCH)}, found {config.mismatch!r}")
        if config.ca_file and not config.url.startswith("wss://"):
            raise ValueError(f"--policy-ca-file is for a wss:// server, found {config.url!r}")
        self.config = config
        self.expected_model = expected_model  # model identity this robot's head needs; None: accept any
        self.reference = reference  # this robot's own computation; None: no compute check, no onboard time yet
        self.metadata: dict | None = None
        self.refused: str | None = None  # why the server may never be used (set once, then no more retries)
        self.difference: tuple[float, float] | None = None  # measured on the test frame at connect (feature, chunk)
        self._checked: str | None = None  # the server computation already measured (its fingerprint)
        self.why = "not connected yet"  # why the onboard engines drive (when not ready)
        self._ws = None  # the connection steps may use: set only while the server is trusted
        self._idle = None  # (stack, ws) connected but on probation: the background thread's alone
        self._stack: contextlib.ExitStack | None = None
        self._lock = threading.Lock()
        self._next_id = 0
        self._hold_until = 0.0
        self._remote = collections.deque(maxlen=config.compare_steps)  # s: remote steps' round trips
        self._onboard = collections.deque(maxlen=config.compare_steps)  # s: onboard steps' vision + language
        if reference is not None:
            self._onboard.append(reference.seconds)
        self._probe_frame = None  # (image, channel order, prompt) of the newest step, for probes
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._background, name="remote-probe", daemon=True)
        self.switches = collections.Counter()  # why the robot left the server: timeout, slow, error, closed

    def start(self, wait: bool = True) -> RemoteEncoder:
        """Start probing in the background; `wait`: connect and probe once now, so the first step can go remote."""
        if not self._thread.is_alive():
            if wait:
                self._attempt()
            self._thread.start()
        return self

    @property
    def connected(self) -> bool:
        """The steps go to the server now (connected and trusted)."""
        return self._ws is not None

    # -- what the steps tell it --------------------------------------------------------------
    def onboard_median(self) -> float | None:
        return statistics.median(self._onboard) if self._onboard else None

    def budget(self) -> float:
        """The longest a remote step may take: the timeout, and max_slowdown x the onboard median when known."""
        onboard = self.onboard_median()
        cap = self.config.max_slowdown * onboard if onboard is not None else float("inf")
        return min(self.config.timeout, cap)

    def record_onboard(self, seconds: float) -> None:
        """An onboard step's vision + language time (what the server runs instead; the resize is the same)."""
        self._onboard.append(seconds)

    def record_remote(self, seconds: float) -> None:
        """A remote step's round trip; leave the server when its median over `compare_steps` steps is over
        max_slowdown x the onboard median."""
        self._remote.append(seconds)
        onboard = self.onboard_median()
        if onboard is None or len(self._remote) < self.config.compare_steps:
            return
        median = statistics.median(self._remote)
        if median > self.config.max_slowdown * onboard:
            self._leave("slow", f"its median step over {len(self._remote)} steps is {median * 1e3:.1f} ms, the "
                                f"onboard engines' {onboard * 1e3:.1f} ms (over {self.config.max_slowdown:g}x)",
                        keep=True)

    def offer(self, image: np.ndarray, channel_order: str, prompt: str | None) -> None:
        """The newest frame, for the probes (resized on the probe thread, not on the step's time)."""
        self._probe_frame = (image, channel_order, prompt)

    # -- leaving and coming back ----------------------------------------------------------------
    def _leave(self, kind: str, why: str, keep: bool = False) -> None:
        """Drive onboard for retry_interval, then probe; `keep`: the connection stays for the probes."""
        with self._lock:
            ws, stack = self._ws, self._stack
            self._ws = None
            if ws is None:
                return
            self._hold_until = time.monotonic() + self.config.retry_interval
            if keep:
                self._idle = (stack, ws)
            else:
                self._stack = None
        self.why = why
        self.switches[kind] += 1
        log.warning("policy server %s left (%s): the onboard engines drive; probing again in %g s", self.config.url,
                    why, self.config.retry_interval)
        if not keep and stack is not None:
            threading.Thread(target=stack.close, daemon=True).start()  # a close handshake may wait: not here
        self._wake.set()

    def _background(self) -> None:
        while not self._stop.is_set() and self.refused is None:
            wait = self.config.retry_interval
            if self._ws is None:
                wait = self._hold_until - time.monotonic()
                if wait <= 0:
                    self._attempt()
                    wait = max(self._hold_until - time.monotonic(), 0.0)
            self._wake.wait(max(wait, 0.01))
            self._wake.clear()

    def _attempt(self) -> None:
        """Connect if needed, then probe; the server is trusted again only when every probe is within budget."""
        if self._idle is None:
            self._idle = self._connect_once()
            if self._idle is None:
                self._hold_until = time.monotonic() + self.config.retry_interval
                return
        stack, ws = self._idle
        ok, why = self._probe(ws)
        if ok:
            with self._lock:
                self._idle = None
                self._stack, self._ws = stack, ws
                self._remote.clear()
            log.info("policy server %s connected (%s): %s", self.config.url, (self.metadata or {}).get("backend"), why)
            return
        self.why = f"probe: {why}"
        log.debug("policy server %s: probe failed: %s", self.config.url, why)
        self._hold_until = time.monotonic() + self.config.retry_interval
        if "no reply" in why or "closed" in why or "error" in why:  # a late reply may still come: a fresh link
            self._idle = None
            threading.Thread(target=stack.close, daemon=True).start()

    def _probe(self, ws) -> tuple[bool, str]:
        frame = self._probe_frame
        size = int((self.metadata or {}).get("image_size", 224))
        if frame is not None:
            image, order, prompt = frame
            rgb = resize_rgb(image, order, size, "rgb")
        elif self.reference is not None:
            rgb, prompt = self.reference.rgb, None
        else:
            rgb, prompt = np.full((size, size, 3), 128, np.uint8), None
        budget = self.budget()
        times = []
        for _ in range(self.config.probes):
            t0 = time.perf_counter()
            try:
                self._ask(ws, rgb, prompt, time.monotonic() + budget)
            except RemoteUnavailable as e:
                return False, str(e)
            times.append(time.perf_counter() - t0)
        return True, (f"{len(times)} probes answered in {max(times) * 1e3:.1f} ms at most, budget "
                      f"{budget * 1e3:.1f} ms")

    # -- connection --------------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext | None:
        if not self.config.url.startswith("wss://"):
            return None
        return ssl.create_default_context(cafile=self.config.ca_file)

    def _connect_once(self):
        """(stack, ws) of a new connection whose metadata this robot accepts; None when none now."""
        from websockets.sync.client import connect  # noqa: PLC0415  websockets: ~200 ms; --policy ws:// only

        cfg = self.config
        headers = {"Authorization": f"Api-Key {cfg.api_key}"} if cfg.api_key else None
        stack = contextlib.ExitStack()
        try:
            ws = stack.enter_context(connect(cfg.url, open_timeout=cfg.connect_timeout, compression=None,
                                             max_size=None, additional_headers=headers, close_timeout=0.2,
                                             ssl=self._ssl()))
            meta = unpackb(ws.recv(timeout=cfg.connect_timeout))
            self._check_metadata(meta)
            self.metadata = meta
            self._check_compute(ws, meta)
        except RemoteRefused as e:
            stack.close()
            self.refused = str(e)
            self.why = f"refused: {e}"
            log.error("policy server %s refused: %s; driving on the onboard engines only", cfg.url, e)
            return None
        except Exception as e:  # refused, reset, timed out, DNS, a bad handshake: try again later
            stack.close()
            self.why = f"not reachable: {type(e).__name__}: {e}"
            log.debug("policy server %s not reachable: %s: %s", cfg.url, type(e).__name__, e)
            return None
        return stack, ws

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
        if "feature" not in meta.get("modes", ["feature"]):
            raise RemoteRefused(f"the server does not serve feature requests (its modes: {meta.get('modes')})")

    def _check_compute(self, ws, meta: dict) -> None:
        """The server's computation against this robot's: measured on the test frame (once per server
        computation, not at every reconnect), warned or refused."""
        server = meta.get("compute")
        key = server.get("fingerprint") if isinstance(server, dict) else None
        if self.reference is None or (key is not None and key == self._checked):
            return
        reply, _ = self._ask(ws, self.reference.rgb, None, time.monotonic() + self.config.connect_timeout)
        self.difference = self.reference.difference(reply["feature"])
        own = self.reference.identity
        same = key == own["fingerprint"]
        measured = (f"on a test frame the ACT features differ by max |d| {self.difference[0]:.1e}, the chunks by "
                    f"{self.difference[1]:.1e} (robot units)")
        self._checked = key
        if same and self.difference == (0.0, 0.0):
            return
        text = (f"the server computes {_describe(server)}, this robot {_describe(own)}: {measured}" if not same else
                f"the server names this robot's computation {_describe(own)}, yet {measured}")
        if self.config.mismatch == "refuse":
            raise RemoteRefused(f"{text} (--policy-mismatch refuse)")
        log.warning("policy server %s: %s; driving on with it (--policy-mismatch warn; 'refuse' forbids it)",
                    self.config.url, text)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.config.connect_timeout + 1)
        with self._lock:
            stacks = [self._stack, self._idle[0] if self._idle else None]
            self._stack, self._ws, self._idle = None, None, None
        for stack in stacks:
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

    def _ask(self, ws, rgb: np.ndarray, prompt: str | None, deadline: float) -> tuple[dict, float]:
        """One feature request on `ws`, answered by `deadline` (time.monotonic()): (reply, round trip s);
        RemoteUnavailable otherwise (the caller decides what becomes of the connection)."""
        self._next_id += 1
        rid = self._next_id
        start, sent = time.perf_counter(), time.monotonic()
        left = deadline - sent
        if left <= 0:
            raise RemoteUnavailable(f"the frame is already {self.config.timeout * 1e3 - left * 1e3:.0f} ms old")
        try:
            ws.send(packb({"type": "feature", "id": rid, "prompt": prompt, "deadline_ms": left * 1e3,
                           **self._image_fields(rgb)}))
            while True:
                raw = ws.recv(timeout=max(deadline - time.monotonic(), 0.0))
                if isinstance(raw, str):  # an error reply (JSON text)
                    error = json.loads(raw)
                    if error.get("id") in (rid, None):
                        raise RemoteUnavailable(f"server error ({error.get('code')}): {error.get('error')}")
                    continue
                reply = unpackb(raw)
                if reply.get("id") == rid:
                    break  # an older id: the late reply of a request that already ran onboard
        except TimeoutError:
            raise RemoteUnavailable(f"no reply within {left * 1e3:.0f} ms") from None
        except RemoteUnavailable:
            raise
        except (WireError, ValueError, AttributeError) as e:
            raise RemoteUnavailable(f"unreadable reply: {e}") from None
        except Exception as e:  # ConnectionClosed, OSError: the link is gone
            raise RemoteUnavailable(f"connection closed: {type(e).__name__}: {e}") from None
        return reply, time.perf_counter() - start

    def feature(self, rgb: np.ndarray, prompt: str | None, deadline: float | None = None) -> tuple[np.ndarray, dict]:
        """(1, D) feature and timings (s: network, server) by `deadline` (time.monotonic(); default now +
        timeout); RemoteUnavailable when the server cannot answer this step."""
        ws = self._ws
        if ws is None:
            raise RemoteUnavailable(self.refused or self.why)
        deadline = time.monotonic() + self.config.timeout if deadline is None else deadline
        try:
            reply, round_trip = self._ask(ws, rgb, prompt, deadline)
        except RemoteUnavailable as e:
            text = str(e)
            if text.startswith("the frame is already"):
                raise  # the camera's lateness, not the server's
            kind = "timeout" if text.startswith("no reply") else "closed" if "closed" in text else "error"
            self._leave(kind, text, keep=kind == "error")
            raise
        server_timing = reply.get("server_timing", {})
        server_s = float(server_timing.get("total_ms", 0.0)) / 1e3
        timings = {k: float(v) / 1e3 for k, v in reply.get("policy_timing", {}).items()}
        timings.update(network=max(round_trip - server_s, 0.0), server=server_s,
                       queue=float(server_timing.get("queue_ms", 0.0)) / 1e3)
        try:
            feature = np.asarray(reply["feature"], np.float32)
        except (KeyError, TypeError, ValueError) as e:
            self._leave("error", f"unreadable reply: {e}")
            raise RemoteUnavailable(f"unreadable reply: {e}") from None
        return feature, timings
