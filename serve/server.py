"""The websocket policy server: metadata on connect, requests in, replies out, errors answered, never fatal.

    engine = Engine(load_bundle("bundle/"), EngineConfig())
    server = PolicyServer(engine, ServerConfig(port=8000))
    asyncio.run(server.serve_forever())

    with ServerThread(engine, ServerConfig(port=0)) as running:    # tests, benchmarks: a server on a thread
        url = running.url                                          # ws://127.0.0.1:PORT

One asyncio event loop does all the I/O; every inference runs in the
engine's worker threads (`run_in_executor`), so while one robot's frame is
in the graphs the loop keeps reading, answering errors and health checks,
and sending other robots' replies. `GET /healthz` on the same port answers
200 "OK" (no key needed: it tells nothing about the model). With an API key,
a websocket handshake without `Authorization: Api-Key KEY` (openpi-client's
header) gets HTTP 401.

A message that is not binary, over `max_message_bytes`, not msgpack, or
carries wrong fields gets a text frame `{"error": ..., "id": ...}` as JSON
(openpi's client raises it as a RuntimeError) and the connection stays open.
A message over `hard_limit_bytes` is refused by the websocket layer itself
(close code 1009), before it is buffered.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from runtime.policy.prompt import PromptTooLongError
from runtime.policy.wire import WireError, packb, unpackb
from serve.engine import Engine
from serve.protocol import (
    ActionsRequest,
    FeatureRequest,
    MetadataRequest,
    ProtocolError,
    ResetRequest,
    metadata,
    parse_request,
    request_id_of,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # bind address: loopback unless told otherwise (0.0.0.0 for a LAN)
    port: int = 8000  # TCP port; 0 lets the system pick one (tests)
    api_key: str | None = None  # shared key; None: no authentication
    max_message_bytes: int = 8 << 20  # a request over this gets an error reply (a 4K RGB frame is 25 MB: resize)
    hard_limit_bytes: int = 32 << 20  # the websocket layer closes the connection (1009) above this


class PolicyServer:
    def __init__(self, engine: Engine, config: ServerConfig = ServerConfig()):
        self.engine, self.config = engine, config
        self.metadata = metadata(engine.bundle, engine.describe(), engine.config.variant, config.max_message_bytes)
        self._connections = itertools.count(1)
        self.served = 0  # replies sent (not errors)
        self.errors = 0  # error replies sent
        self.port: int | None = None

    # -- HTTP side: health and authentication ----------------------------------------------
    def process_request(self, connection, request):
        if request.path.split("?")[0] == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if self.config.api_key is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self.config.api_key}".encode()):
                return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                          "missing or wrong 'Authorization: Api-Key KEY' header\n")
        return None

    # -- one connection ------------------------------------------------------------------------
    async def handler(self, websocket) -> None:
        conn = f"connection-{next(self._connections)}"  # the robot id of a client that sends none
        log.info("%s from %s opened", conn, websocket.remote_address)
        used: set[str] = set()
        try:
            await websocket.send(packb(self.metadata))
            async for raw in websocket:
                received = time.perf_counter()
                message = None
                try:
                    if isinstance(raw, str):
                        raise ProtocolError("send binary msgpack messages, not text")
                    message = unpackb(raw, self.config.max_message_bytes)
                    reply = await self._serve(parse_request(message), conn, used, received)
                except (ProtocolError, WireError, PromptTooLongError) as e:
                    await self._error(websocket, str(e), request_id_of(message))
                    continue
                except Exception as e:  # a backend failure: this request fails, the server goes on
                    log.exception("%s: inference failed", conn)
                    await self._error(websocket, f"inference failed: {type(e).__name__}: {e}",
                                      request_id_of(message))
                    continue
                await websocket.send(packb(reply))
                self.served += 1
        except ConnectionClosed:
            pass
        finally:
            for robot in used:
                if robot == conn:  # a connection's own ring ends with it; named robots keep theirs
                    self.engine.drop(robot)
            log.info("%s closed", conn)

    async def _error(self, websocket, text: str, rid) -> None:
        self.errors += 1
        await websocket.send(json.dumps({"error": text, "id": rid}))

    async def _serve(self, request, conn: str, used: set, received: float) -> dict:
        loop = asyncio.get_running_loop()
        engine = self.engine
        if isinstance(request, MetadataRequest):
            return dict(self.metadata, id=request.id)
        if isinstance(request, ResetRequest):
            robot = request.robot_id or conn
            return {"id": request.id, "robot_id": robot, "reset": engine.reset(robot)}
        start = time.perf_counter()
        if isinstance(request, FeatureRequest):
            def work():
                return (time.perf_counter(), *engine.feature(request.image, request.prompt))
            began, feature, timings = await loop.run_in_executor(engine.executor, work)
            reply = {"feature": feature}
        else:
            assert isinstance(request, ActionsRequest)
            robot = request.robot_id or conn
            used.add(robot)

            def work():
                return (time.perf_counter(), *engine.actions(robot, request.image, request.prompt, request.reset))
            began, chunk, timings = await loop.run_in_executor(engine.executor, work)
            reply = {"actions": chunk, "robot_id": robot}
        done = time.perf_counter()
        reply.update(id=request.id, policy_timing={k: v * 1e3 for k, v in timings.items()},
                     server_timing={"queue_ms": (began - start) * 1e3, "infer_ms": (done - began) * 1e3,
                                    "total_ms": (done - received) * 1e3})
        return reply

    # -- running -----------------------------------------------------------------------------------
    async def serve_forever(self, started: threading.Event | None = None, stop: asyncio.Event | None = None) -> None:
        async with serve(self.handler, self.config.host, self.config.port, process_request=self.process_request,
                         max_size=self.config.hard_limit_bytes, compression=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info("serving %s on ws://%s:%d (health: GET /healthz)", self.engine.describe(), self.config.host,
                     self.port)
            if started is not None:
                started.set()
            if stop is None:
                await server.serve_forever()
            else:
                await stop.wait()


class ServerThread:
    """A PolicyServer on a background thread with its own event loop (tests, benchmarks, simulators)."""

    def __init__(self, engine: Engine, config: ServerConfig = ServerConfig(port=0)):
        self.server = PolicyServer(engine, config)
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
        return f"ws://{self.server.config.host}:{self.server.port}"

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
