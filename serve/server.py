"""The websocket policy server: metadata on connect, requests in, replies out, errors answered, never fatal.

    engine = Engine(load_bundle("bundle/"), EngineConfig())
    server = PolicyServer(engine, ServerConfig(port=8000))
    asyncio.run(server.serve_forever())

    with ServerThread(engine, ServerConfig(port=0)) as running:    # tests, benchmarks: a server on a thread
        url = running.url                                          # ws://127.0.0.1:PORT

The event loop only moves bytes: each message is unpacked, checked, its
JPEG decoded and its image resized by a thread of the prepare pool, and
computed by the engine's workers (serve/engine.py), so one robot sending
4096 x 4096 JPEGs cannot hold up another robot's replies. An image over
BULK_PIXELS (a JPEG is sized from its header) is decoded and resized by
the one bulk thread instead, at the lowest CPU priority (SCHED_IDLE on
Linux), and its inference queues behind the robots' frames: on a busy
machine the robots' own frames go first, and large images wait for each
other. A connection's messages are taken
one at a time, so one client occupies at most one thread, and the
websocket layer reads at most MAX_QUEUE messages ahead of it.

Limits (docs/serving.md, "Limits"): at most `max_connections` at once (more
get HTTP 503 at the handshake); a message over `max_message_bytes` closes
its connection (1009) from its frame header, before it is buffered; a reply
not taken by the client within `send_timeout_s` drops the connection; pings
drop a peer that stopped answering. `GET /healthz` is liveness (the loop
answers); `GET /readyz` is 200 only when a worker finished an inference
within `ready_period_s` (a grey frame is sent through the workers while no
robot does). Neither needs a key; neither says anything about the model.

With a key, a websocket handshake without `Authorization: Api-Key KEY`
(openpi-client's header) gets HTTP 401. With `certfile`/`keyfile` the
server speaks TLS (wss://, https:// for the health checks).

A message that is not binary, not msgpack, or carries wrong fields gets a
text frame `{"error": ..., "id": ..., "code": ...}` as JSON (openpi's client
raises it as a RuntimeError) and the connection stays open.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import json
import logging
import os
import signal
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from runtime.policy.prompt import PromptTooLongError
from runtime.policy.wire import WireError, packb, unpackb
from serve.engine import DeadlineExceeded, Engine, Job
from serve.protocol import (
    ActionsRequest,
    FeatureRequest,
    MetadataRequest,
    ProtocolError,
    ResetRequest,
    decode_image,
    image_pixels,
    metadata,
    parse_request,
    request_id_of,
)
from serve.rings import RingRefused

log = logging.getLogger(__name__)
MAX_QUEUE = 2  # messages the websocket layer reads ahead of a connection's handler (memory: 3 x max_message_bytes)
BULK_PIXELS = 1 << 20  # images over a megapixel are decoded and resized by the low-priority bulk thread


def _lowest_priority() -> None:
    """Make the calling thread the machine's last in line for a core: Linux's SCHED_IDLE (it runs only when no
    other thread wants the core, and yields at once when one does), else nice 19; elsewhere unchanged."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, 19)
        except (AttributeError, OSError):  # not Linux: the thread keeps the process's priority
            pass


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # bind address: loopback unless told otherwise (a LAN address needs a key or --insecure)
    port: int = 8000  # TCP port; 0 lets the system pick one (tests)
    api_key: str | None = None  # shared key; None: no authentication
    max_message_bytes: int = 8 << 20  # larger messages close the connection (1009) before being buffered
    max_connections: int = 32  # connections at once; more get HTTP 503
    send_timeout_s: float = 5.0  # a reply the client does not take within this drops the connection
    ready_period_s: float = 5.0  # /readyz: a worker finished an inference within this
    certfile: str | None = None  # TLS certificate chain (PEM): serve wss:// and https://
    keyfile: str | None = None  # its private key (PEM)


class _Prepared:
    """What the prepare pool made of one message: a reply at once, or a job for the workers (its pixels made
    here, or by the bulk thread from `image` when it is large)."""

    def __init__(self, rid=None, reply: dict | None = None, job: Job | None = None, request=None,
                 extra: dict | None = None, preprocess_s: float = 0.0, image=None, job_fields: dict | None = None):
        self.rid, self.reply, self.job, self.request = rid, reply, job, request
        self.extra = extra or {}
        self.preprocess_s = preprocess_s
        self.image, self.job_fields = image, job_fields


class PolicyServer:
    def __init__(self, engine: Engine, config: ServerConfig = ServerConfig(), modes=("actions", "feature")):
        self.engine, self.config = engine, config
        self.modes = tuple(modes)
        rc = engine.config.rings
        limits = {"max_message_bytes": config.max_message_bytes, "max_connections": config.max_connections,
                  "ring_ttl_s": rc.ttl_s, "rings_per_connection": rc.per_connection,
                  "max_batch": engine.config.max_batch, "batch_window_ms": engine.config.batch_window_ms}
        self.metadata = metadata(engine.bundle, engine.describe(), engine.identity(), list(self.modes), limits)
        self._prepare_pool = ThreadPoolExecutor(engine.config.prepare_workers, thread_name_prefix="serve-prepare")
        self._bulk_pool = ThreadPoolExecutor(1, thread_name_prefix="serve-bulk", initializer=_lowest_priority)
        self.connections = 0  # open websocket connections
        self.received = 0  # messages taken from the connections
        self.served = 0  # replies sent (not errors)
        self.errors = 0  # error replies sent
        self.dropped = 0  # connections dropped for not taking their replies
        self.port: int | None = None

    # -- HTTP side: health, readiness, the connection cap, authentication ------------------------
    def ready(self) -> tuple[bool, str]:
        age = time.monotonic() - self.engine.last_done
        if age <= self.config.ready_period_s:
            return True, f"ready: last inference {age:.1f} s ago\n"
        since = "since the start" if age == float("inf") else f"for {age:.1f} s"
        return False, (f"not ready: no inference finished {since} (period {self.config.ready_period_s:g} s): the "
                       f"workers are still loading, busy or stuck\n")

    def process_request(self, connection, request):
        path = request.path.split("?")[0]
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if path == "/readyz":
            ok, text = self.ready()
            return connection.respond(http.HTTPStatus.OK if ok else http.HTTPStatus.SERVICE_UNAVAILABLE, text)
        if self.config.api_key is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self.config.api_key}".encode()):
                return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                          "missing or wrong 'Authorization: Api-Key KEY' header\n")
        if self.connections >= self.config.max_connections:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE,
                                      f"server full: {self.connections} connections (max "
                                      f"{self.config.max_connections}); try again later\n")
        return None

    # -- one connection ------------------------------------------------------------------------
    async def handler(self, websocket) -> None:
        if self.connections >= self.config.max_connections:  # handshakes that raced past the check above
            await websocket.close(1013, "server full")
            return
        self.connections += 1
        loop = asyncio.get_running_loop()
        log.info("connection from %s opened (%d open)", websocket.remote_address, self.connections)
        try:
            await self._send(websocket, packb(self.metadata))
            async for raw in websocket:
                received = time.monotonic()
                self.received += 1
                rid = None
                try:
                    if isinstance(raw, str):
                        raise ProtocolError("send binary msgpack messages, not text")
                    prepared = await loop.run_in_executor(self._prepare_pool, self._prepare, raw, websocket, received)
                    rid = prepared.rid
                    if prepared.image is not None:  # a large image: decoded and resized by the bulk thread
                        prepared = await loop.run_in_executor(self._bulk_pool, self._make_pixels, prepared)
                    reply = prepared.reply if prepared.reply is not None else await self._compute(prepared)
                except Exception as e:  # an error reply; the connection and the server go on
                    rid, error = (e.rid, e.error) if isinstance(e, _WithId) else (rid, e)
                    code = _error_code(error)
                    text = str(error)
                    if code == "inference":
                        log.error("inference failed: %s: %s", type(error).__name__, error, exc_info=error)
                        text = f"inference failed: {type(error).__name__}: {error}"
                    await self._error(websocket, text, rid, code)
                    continue
                await self._send(websocket, packb(reply))
                self.served += 1
        except ConnectionClosed:
            pass
        except TimeoutError:
            self.dropped += 1
            log.warning("connection from %s dropped: it took no reply for %g s", websocket.remote_address,
                        self.config.send_timeout_s)
            websocket.transport.abort()
        finally:
            self.connections -= 1
            self.engine.rings.release(websocket)
            log.info("connection from %s closed", websocket.remote_address)

    async def _send(self, websocket, data) -> None:
        """Send, or raise TimeoutError when the client has not taken its replies within send_timeout_s."""
        async with asyncio.timeout(self.config.send_timeout_s):
            await websocket.send(data)

    async def _error(self, websocket, text: str, rid, code: str) -> None:
        self.errors += 1
        await self._send(websocket, json.dumps({"error": text, "id": rid, "code": code}))

    def _prepare(self, raw: bytes, conn, received: float) -> _Prepared:
        """On a prepare thread: unpack, check, decode, resize; metadata and reset are answered here."""
        message = unpackb(raw, self.config.max_message_bytes)
        try:
            request = parse_request(message, decode=False)
        except ProtocolError as e:
            raise _WithId(request_id_of(message), e) from None
        rid = request.id
        if isinstance(request, MetadataRequest):
            return _Prepared(rid, reply=dict(self.metadata, id=rid))
        if isinstance(request, ResetRequest):
            try:
                done = self.engine.rings.reset(conn, request.robot_id, request.robot_token)
            except RingRefused as e:
                raise _WithId(rid, e) from None
            return _Prepared(rid, reply={"id": rid, "reset": done,
                                         "robot_id": request.robot_id or self.engine.rings.own_key(conn)})
        kind = "feature" if isinstance(request, FeatureRequest) else "actions"
        if kind not in self.modes:
            raise _WithId(rid, ProtocolError(f"this server does not serve {kind!r} requests (its metadata's modes: "
                                             f"{list(self.modes)})"))
        deadline = None if request.deadline_ms is None else received + request.deadline_ms / 1e3
        try:
            if isinstance(request, ActionsRequest):
                ring, status = self.engine.rings.open(conn, request.robot_id, request.robot_token, request.prompt,
                                                      self.engine.instruction(request.prompt))
                fields = dict(input_ids=ring.policy.input_ids, attention_mask=ring.policy.attention_mask, ring=ring,
                              reset=request.reset, deadline=deadline)
                extra = {"robot_id": ring.key, "robot_token": ring.token,
                         "ring": "reset" if request.reset and status == "kept" else status}
            else:
                ids, mask = self.engine.prompt_ids(request.prompt)
                fields, extra = dict(input_ids=ids, attention_mask=mask, deadline=deadline), {}
        except (RingRefused, PromptTooLongError) as e:
            raise _WithId(rid, e) from None
        prepared = _Prepared(rid, request=request, extra=extra, image=request.image, job_fields=fields)
        if image_pixels(request.image) > BULK_PIXELS:
            fields["priority"] = 1  # its inference waits while robots' frames are queued, too
            return prepared
        return self._make_pixels(prepared)

    def _make_pixels(self, prepared: _Prepared) -> _Prepared:
        """Decode (a JPEG) and resize + normalise the request's image: the job for the workers."""
        t0 = time.perf_counter()
        try:
            pixels = self.engine.pixels(decode_image(prepared.image, self.engine.preprocess.size))
        except ProtocolError as e:
            raise _WithId(prepared.rid, e) from None
        prepared.job = Job(pixels, **prepared.job_fields)
        prepared.image = None
        prepared.preprocess_s = time.perf_counter() - t0
        return prepared

    async def _compute(self, prepared: _Prepared) -> dict:
        job = prepared.job
        start = time.perf_counter()
        result, timings = await asyncio.wrap_future(self.engine.submit(job))
        done = time.perf_counter()
        key = "feature" if isinstance(prepared.request, FeatureRequest) else "actions"
        timings["preprocess"] = prepared.preprocess_s
        stages = {k: timings[k] * 1e3 for k in ("preprocess", "vision", "language", "head") if k in timings}
        return {key: result, "id": prepared.rid, **prepared.extra, "policy_timing": stages,
                "server_timing": {"queue_ms": timings["queue"] * 1e3, "infer_ms": timings["infer"] * 1e3,
                                  "batch": timings["batch"], "total_ms": (done - start) * 1e3 + timings["preprocess"]
                                  * 1e3}}

    # -- running -----------------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.certfile:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.config.certfile, self.config.keyfile)
        return context

    async def _keep_ready(self, stop: asyncio.Event) -> None:
        """While no robot sends, a grey frame through the workers every half period keeps /readyz honest."""
        period = self.config.ready_period_s
        while not stop.is_set():
            if time.monotonic() - self.engine.last_done > period / 2:
                self.engine.canary(period)
            try:
                await asyncio.wait_for(stop.wait(), period / 4)
            except TimeoutError:
                pass

    async def serve_forever(self, started: threading.Event | None = None, stop: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set; without one (a command), until SIGTERM or SIGINT, then return normally so
        the caller releases what it holds (engines, a Ray instance)."""
        if stop is None:
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        tls = self.ssl_context()
        async with serve(self.handler, self.config.host, self.config.port, process_request=self.process_request,
                         max_size=self.config.max_message_bytes, max_queue=MAX_QUEUE, compression=None,
                         ssl=tls) as server:
            self.port = server.sockets[0].getsockname()[1]
            scheme = "wss" if tls else "ws"
            log.info("serving %s on %s://%s:%d (liveness: GET /healthz, readiness: GET /readyz)",
                     self.engine.describe(), scheme, self.config.host, self.port)
            keeper = asyncio.create_task(self._keep_ready(stop))
            if started is not None:
                started.set()
            try:
                await stop.wait()
            finally:
                keeper.cancel()
                self._prepare_pool.shutdown(wait=False, cancel_futures=True)
                self._bulk_pool.shutdown(wait=False, cancel_futures=True)


class _WithId(Exception):
    """A request's error with the id to echo (raised on a prepare thread, answered on the loop)."""

    def __init__(self, rid, error: Exception):
        super().__init__(str(error))
        self.rid, self.error = rid, error


def _error_code(error: BaseException) -> str:
    """The error reply's `code`: what kind of failure, for a client to act on without parsing the text."""
    if isinstance(error, (ProtocolError, WireError, PromptTooLongError)):
        return "protocol"
    if isinstance(error, RingRefused):
        return "ring"
    if isinstance(error, DeadlineExceeded):
        return "deadline"
    return "inference"


class ServerThread:
    """A PolicyServer on a background thread with its own event loop (tests, benchmarks, simulators)."""

    def __init__(self, engine: Engine, config: ServerConfig = ServerConfig(port=0), **kw):
        self.server = PolicyServer(engine, config, **kw)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="serve", daemon=True)
        self._started = threading.Event()
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        try:
            self._loop.run_until_complete(self.server.serve_forever(self._started, self._stop))
        except BaseException as e:
            self.error = e
            self._started.set()

    @property
    def url(self) -> str:
        scheme = "wss" if self.server.config.certfile else "ws"
        return f"{scheme}://{self.server.config.host}:{self.server.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._started.wait(30)
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def __exit__(self, *exc) -> None:
        self.stop()
