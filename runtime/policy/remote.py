"""The robot's policy with vision and language on a policy server, and its own engines as the fallback.

    from runtime.policy.remote import RemotePolicy
    from runtime.policy.remote_encoder import OnboardReference, RemoteConfig, RemoteEncoder
    encoder = RemoteEncoder(RemoteConfig("ws://10.0.0.5:8000"), model_identity(bundle.manifest),
                            OnboardReference(bundle, local_backend)).start()
    policy = RemotePolicy(bundle, local_backend, encoder, instruction="reach the bottle on the left")
    step = policy.infer(frame)          # same PolicyStep as the onboard Policy; policy.source: "remote"/"onboard"
    encoder.close()

    python -m runtime.drive --policy ws://10.0.0.5:8000 --fallback-bundle bundle/ ...

The split (docs/serving.md, "Why the split"): the server computes the
expensive, stateless part, frame + instruction -> ACT feature, and the robot
keeps its ring of features and runs the small action head itself. So any
server replica can answer any frame, and a switch to the onboard engines
keeps the ring intact: the onboard vision and language push the next
feature into the same ring.

When the server drives, and when it does not (docs/serving.md, "The robot
client"): a slow or lost server never makes a step slower than the onboard
engines would (runtime/policy/remote_encoder.py, the link and its rules).

The frame is resized to the bundle's image size on the robot (RGB, 150 KB
for 224 x 224 instead of 2.7 MB for 1280 x 720), optionally JPEG-encoded.
Each switch is logged; `source` and the timings (`network` = round trip
minus the server's own time) say which policy drove each step.

websockets (its threading client) and msgpack only: no torch, no asyncio.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time

import numpy as np

from runtime.cli import CommandError
from runtime.hardware import Frame
from runtime.policy.behaviours import with_behaviours
from runtime.policy.bundle import Bundle, load_bundle
from runtime.policy.onboard import Policy
from runtime.policy.preprocess import resize_rgb
from runtime.policy.remote_encoder import MISMATCH, OnboardReference, RemoteConfig, RemoteEncoder, RemoteUnavailable
from runtime.policy.wire import (
    API_KEY_ENV,
    model_identity,
    read_api_key,
)

log = logging.getLogger(__name__)


class RemotePolicy(Policy):
    """A runtime Policy whose feature step asks the server first: same ring and pacing, same head, same `infer`."""

    def __init__(self, bundle: Bundle, backend, encoder: RemoteEncoder, instruction: str | None = None):
        super().__init__(bundle, backend, instruction=instruction)
        self.prompt = instruction  # what the server is sent: None means the bundle's default, as here
        self.encoder = encoder
        self.source = ""  # which engines encoded the newest frame: "remote" or "onboard" ("" before the first)
        self.switches = 0  # remote <-> onboard changes after the first step
        self._stamp: float | None = None  # the newest frame's capture time (time.monotonic())

    def _use(self, source: str, why: str = "") -> None:
        if source != self.source:
            self.switches += bool(self.source)
            log.info("policy: %s%s", source, f" ({why})" if why else "")
        self.source = source

    def encode(self, frame) -> tuple[np.ndarray, dict]:
        self._stamp = frame.stamp if isinstance(frame, Frame) else None
        return super().encode(frame)

    def feature(self, image: np.ndarray) -> tuple[np.ndarray, dict]:
        """The ACT feature from the server while it is trusted; else, or when it is late, from the onboard
        engines for the same image. Policy.encode puts it in the ring either way."""
        t0 = time.perf_counter()
        p = self.preprocess_config
        why = self.encoder.refused or self.encoder.why
        if self.encoder.connected:
            rgb = resize_rgb(image, p.channel_order, p.size, "rgb")  # on the robot: 150 KB on the wire
            resized = time.perf_counter() - t0
            captured = self._stamp if self._stamp is not None else time.monotonic()
            try:
                feature, timings = self.encoder.feature(rgb, self.prompt, captured + self.encoder.config.timeout)
            except RemoteUnavailable as e:
                why = str(e)
            else:
                self._use("remote")
                self.encoder.record_remote(time.perf_counter() - t0 - resized)
                timings["preprocess"] = resized + timings.get("preprocess", 0.0)
                return feature, timings
        self._use("onboard", why)
        self.encoder.offer(image, p.channel_order, self.prompt)
        feature, timings = super().feature(image)
        self.encoder.record_onboard(timings["vision"] + timings["language"])
        return feature, timings


def add_remote_arguments(ap: argparse.ArgumentParser) -> None:
    d = RemoteConfig
    ap.add_argument("--policy", metavar="ws://HOST:PORT",
                    help="vision and language on this policy server (python -m serve; wss:// for TLS); the ring and "
                         "the head run here, and --bundle/--fallback-bundle (the same bundle) drives whenever the "
                         "server is lost or slower than it")
    ap.add_argument("--policy-timeout", type=float, default=d.timeout,
                    help="--policy: seconds from a frame's capture before its reply counts as lost (the step runs "
                         "onboard)")
    ap.add_argument("--policy-retry", type=float, default=d.retry_interval,
                    help="--policy: seconds on the onboard engines after a lost or slow server before probing it")
    ap.add_argument("--policy-max-slowdown", type=float, default=d.max_slowdown,
                    help="--policy: leave the server while its median step is over this x the onboard engines' "
                         "(inf: keep a slower server)")
    ap.add_argument("--policy-mismatch", choices=MISMATCH, default=d.mismatch,
                    help="--policy: a server computing otherwise than this robot (another backend, precision or "
                         "engine): warn with the measured difference, or refuse it")
    ap.add_argument("--policy-api-key-file", metavar="FILE",
                    help=f"--policy: the server's key, read from FILE (default: ${API_KEY_ENV})")
    ap.add_argument("--policy-api-key", help="--policy: the key itself (visible in ps: prefer the file or environment)")
    ap.add_argument("--policy-ca-file", metavar="PEM", help="--policy wss://: a CA certificate to trust")
    ap.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality,
                    help="--policy: send frames as JPEG at this quality (1-100) instead of raw pixels")


def remote_config_from_args(args: argparse.Namespace) -> RemoteConfig | None:
    if not getattr(args, "policy", None):
        return None
    if args.policy_api_key:
        log.warning("--policy-api-key puts the key on the command line, where every user of this machine can read "
                    "it (ps): use --policy-api-key-file FILE or the %s environment variable", API_KEY_ENV)
    try:
        key = args.policy_api_key or read_api_key(args.policy_api_key_file)
    except ValueError as e:
        raise CommandError(f"--policy-api-key-file: {e}") from None
    return RemoteConfig(args.policy, timeout=args.policy_timeout, retry_interval=args.policy_retry,
                        api_key=key, jpeg_quality=args.jpeg_quality, max_slowdown=args.policy_max_slowdown,
                        mismatch=args.policy_mismatch, ca_file=args.policy_ca_file)


@contextlib.contextmanager
def open_remote_policy(spec, remote: RemoteConfig):
    """runtime.policy_setup.open_policy's remote twin: a RemotePolicy on spec.bundle's engines, behaviours around
    it; the connection and the backend are released on leaving."""
    from runtime.policy.backends.registry import make_backend  # noqa: PLC0415  backends load with the bundle, not for --help

    bundle = load_bundle(spec.bundle, verify=spec.verify)
    backend = make_backend(bundle, spec.backend, variant=spec.variant).activate()
    encoder = None
    try:
        encoder = RemoteEncoder(remote, model_identity(bundle.manifest), OnboardReference(bundle, backend)).start()
        if not encoder.connected:
            log.warning("policy server %s not in use yet (%s): the onboard engines drive until it answers",
                        remote.url, encoder.refused or encoder.why)
        policy = RemotePolicy(bundle, backend, encoder, instruction=spec.instruction)
        yield with_behaviours(policy, spec.chunk_mode, spec.discrete)
    finally:
        if encoder is not None:
            encoder.close()
        backend.deactivate()
