"""Whose ring is whose: the server's table of robots' rings, bound to connections, resumed only with their token.

    table = RingTable(RingConfig(ttl_s=600), make_ring=lambda prompt: Policy(bundle, None, instruction=prompt))
    ring, status = table.open(conn, robot_id=None, token=None, prompt=None)   # this connection's own ring
    ring, status = table.open(conn, "r7", None, prompt)          # a named robot: created here, bound to conn
    table.release(conn)                                          # connection closed: own ring gone, r7 idle
    ring, status = table.open(conn2, "r7", ring.token, prompt)   # resumed by the robot that holds its token

A ring (a robot's last W ACT features under one instruction) belongs to one
robot, and the server knows a robot by its connection:

- A request without `robot_id` uses the connection's own ring, named by an
  unguessable id (echoed in replies); it ends with the connection.
- A request naming `robot_id` binds that ring to this connection while it
  is open: a second live connection naming it is refused with an error. When
  the connection closes the ring stays, idle, for `ttl_s`; a connection may
  take it over only with the ring's `robot_token`, an unguessable token the
  server sends in every reply on that ring. So no client can read, write or
  reset another robot's ring by guessing its name.
- Eviction takes only idle rings: those whose connection has closed, after
  `ttl_s` without use, or the least recently used of them when the table is
  full. A ring in use by a live connection is never evicted; a connection
  holds at most `per_connection` rings, so `max_connections x
  per_connection` rings (the defaults: 32 x 16 = 512 < 1024) always fit.

Every open says whether the ring is `new` (created now, or restarted by a
changed instruction: empty before this frame) or `kept`.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

ROBOT_ID_CHARS = 128  # longest robot_id accepted


class RingRefused(ValueError):
    """A ring this connection may not use (another robot's, or no room); the text says why and what to do."""


@dataclass(frozen=True)
class RingConfig:
    ttl_s: float = 600.0  # an idle ring (its connection closed) is kept this long for its robot to come back
    max_rings: int = 1024  # rings kept in all; when full, the least recently used idle ring goes first
    per_connection: int = 16  # rings one connection may hold (its own and the robots it names)


class Ring:
    """One robot's state on the server: a runtime Policy (its ring of features and tokenized instruction)."""

    def __init__(self, key: str, policy, owner, named: bool):
        self.key = key  # the robot_id, or the connection's own unguessable ring id
        self.policy = policy
        self.owner = owner  # the live connection it is bound to; None: idle
        self.named = named
        self.token = secrets.token_urlsafe(24)  # proves the robot when it comes back on another connection
        self.lock = threading.Lock()  # one frame at a time on this ring
        self.last_used = time.monotonic()


class RingTable:
    def __init__(self, config: RingConfig, make_ring: Callable):
        self.config = config
        self._make = make_ring  # prompt -> a Policy with an empty ring
        self._rings: OrderedDict[str, Ring] = OrderedDict()  # least recently used first
        self._held: dict[object, set[str]] = {}  # connection -> keys of the rings bound to it
        self._own: dict[object, str] = {}  # connection -> the key of its own ring
        self._lock = threading.Lock()
        self.evicted = 0  # idle rings dropped (TTL or a full table)

    def __len__(self) -> int:
        return len(self._rings)

    def own_key(self, conn) -> str:
        """The unguessable id of this connection's own ring (what a request without robot_id uses)."""
        with self._lock:
            if conn not in self._own:
                self._own[conn] = "conn-" + secrets.token_urlsafe(16)
            return self._own[conn]

    # -- opening a ring for one request ------------------------------------------------
    def open(self, conn, robot_id: str | None, token: str | None, prompt: str | None,
             instruction: str) -> tuple[Ring, str]:
        """The ring this request runs on and "new" or "kept"; RingRefused when the connection may not use it.
        `instruction` is what `prompt` means (the bundle's default for None): another one starts a new ring."""
        key = self.own_key(conn) if robot_id is None else robot_id
        now = time.monotonic()
        with self._lock:
            ring = self._rings.get(key)
            if ring is not None and ring.owner is None and now - ring.last_used > self.config.ttl_s:
                self._drop(key)  # expired: as if it never existed
                ring = None
            if ring is not None:
                if ring.owner is not None and ring.owner is not conn:
                    raise RingRefused(f"robot_id {key!r} is in use by another live connection: one connection per "
                                      f"robot (close the other one, or name another robot_id)")
                if ring.owner is None:
                    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), ring.token.encode()):
                        raise RingRefused(
                            f"robot_id {key!r} has a ring whose connection closed {now - ring.last_used:.0f} s ago "
                            f"(kept {self.config.ttl_s:.0f} s for its robot): resume it with the robot_token its "
                            f"replies carried, or name another robot_id")
                    self._bind(ring, conn)
                self._rings.move_to_end(key)
                ring.last_used = now
                if ring.policy.instruction == instruction:
                    return ring, "kept"
            held = self._held.get(conn, set())
            if ring is None and len(held) >= self.config.per_connection:
                raise RingRefused(f"this connection already holds {len(held)} rings, the limit is "
                                  f"{self.config.per_connection}: one connection per robot")
        policy = self._make(prompt)  # tokenizing: outside the table's lock (PromptTooLongError goes to the sender)
        with self._lock:
            old = self._rings.get(key)
            if old is not None and old.owner is not conn:  # taken meanwhile by another connection
                raise RingRefused(f"robot_id {key!r} is in use by another live connection")
            if old is None:
                self._make_room(now)
                ring = Ring(key, policy, None, named=robot_id is not None)
                self._rings[key] = ring
                self._bind(ring, conn)
            else:  # same robot, another instruction: a new ring under the same key and token
                old.policy = policy
                ring = old
            ring.last_used = now
            return ring, "new"

    def _bind(self, ring: Ring, conn) -> None:
        ring.owner = conn
        self._held.setdefault(conn, set()).add(ring.key)

    def _make_room(self, now: float) -> None:
        """Drop expired idle rings; if the table is still full, the least recently used idle ones."""
        for key in [k for k, r in self._rings.items() if r.owner is None and now - r.last_used > self.config.ttl_s]:
            self._drop(key)
        while len(self._rings) >= self.config.max_rings:
            idle = next((k for k, r in self._rings.items() if r.owner is None), None)
            if idle is None:
                raise RingRefused(f"the server holds {len(self._rings)} rings, all in use by live connections "
                                  f"(max {self.config.max_rings}): try again later")
            self._drop(idle)

    def _drop(self, key: str) -> None:
        self._rings.pop(key, None)
        self.evicted += 1

    # -- other operations ------------------------------------------------------------------
    def reset(self, conn, robot_id: str | None, token: str | None) -> bool:
        """Empty a ring this connection holds (or may resume with its token); False: no such ring."""
        key = self.own_key(conn) if robot_id is None else robot_id
        with self._lock:
            ring = self._rings.get(key)
            if ring is None:
                return False
            if ring.owner is not conn:
                if ring.owner is not None:
                    raise RingRefused(f"robot_id {key!r} is in use by another live connection")
                if not isinstance(token, str) or not hmac.compare_digest(token.encode(), ring.token.encode()):
                    raise RingRefused(f"robot_id {key!r}: send its robot_token to reset it")
                self._bind(ring, conn)
        with ring.lock:
            ring.policy.reset()
        return True

    def release(self, conn) -> None:
        """A connection closed: its own ring is dropped, the robots it named keep theirs, idle from now."""
        now = time.monotonic()
        with self._lock:
            own = self._own.pop(conn, None)
            for key in self._held.pop(conn, set()):
                ring = self._rings.get(key)
                if ring is None or ring.owner is not conn:
                    continue
                if key == own:
                    self._rings.pop(key, None)
                else:
                    ring.owner, ring.last_used = None, now
