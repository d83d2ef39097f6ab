"""Rings belong to robots: bound to their connection, resumed only with their token, never evicted while in use."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.policy.wire import packb, unpackb
from tests.serve.conftest import robot_frames


def open_client(url):
    from websockets.sync.client import connect

    ws = connect(url, compression=None, max_size=None).__enter__()
    unpackb(ws.recv(timeout=10))
    return ws


def ask(ws, message: dict):
    import json

    ws.send(packb(message))
    raw = ws.recv(timeout=30)
    return json.loads(raw) if isinstance(raw, str) else unpackb(raw)


def rgb(frame):
    return np.ascontiguousarray(frame[..., ::-1])


def test_a_second_connection_naming_a_live_robots_ring_is_refused_and_cannot_touch_it(server, onboard):
    """Robot A drives as 'r-live'; B names 'r-live' (a frame, a reset): refused with an error naming the rule,
    and A's chunks stay exactly the onboard ones. A connection's own ring has an unguessable name."""
    frames = robot_frames(21, 6)
    policy = onboard()
    expected = [policy.infer(f).chunk for f in frames]
    a, b = open_client(server.url), open_client(server.url)
    try:
        for i, frame in enumerate(frames):
            reply = ask(a, {"image": rgb(frame), "robot_id": "r-live"})
            assert np.array_equal(reply["actions"], expected[i]) and reply["ring"] == ("new" if i == 0 else "kept")
            if i == 2:
                intruder = ask(b, {"image": rgb(frames[0]), "robot_id": "r-live"})
                assert intruder["code"] == "ring" and "in use by another live connection" in intruder["error"]
                reset = ask(b, {"type": "reset", "robot_id": "r-live"})
                assert reset["code"] == "ring"
        own = ask(b, {"image": rgb(frames[0])})["robot_id"]
        assert own.startswith("conn-") and len(own) >= 5 + 20  # 16 random bytes, not connection-N
        assert ask(a, {"image": rgb(frames[0]), "robot_id": own})["code"] == "ring"
    finally:
        a.close()
        b.close()


def test_an_idle_ring_is_resumed_only_with_its_token(server, onboard):
    frames = robot_frames(22, 3)
    policy = onboard()
    expected = [policy.infer(f).chunk for f in frames]
    a = open_client(server.url)
    token = ask(a, {"image": rgb(frames[0]), "robot_id": "r-idle"})["robot_token"]
    a.close()
    b = open_client(server.url)
    try:
        guess = ask(b, {"image": rgb(frames[1]), "robot_id": "r-idle", "robot_token": "guess"})
        assert guess["code"] == "ring" and "robot_token" in guess["error"]
        back = ask(b, {"image": rgb(frames[1]), "robot_id": "r-idle", "robot_token": token})
        assert back["ring"] == "kept" and np.array_equal(back["actions"], expected[1])
    finally:
        b.close()


def test_1024_new_ids_evict_no_ring_in_use(tiny_bundle):
    """The table (max 64 rings, 16 per connection): 64 connections each name 16 new robots and close (1024 new
    ids); a robot whose connection is open keeps its ring throughout; the idle rings are the ones evicted."""
    from runtime.policy.onboard import Policy
    from serve.rings import RingConfig, RingRefused, RingTable

    table = RingTable(RingConfig(ttl_s=600, max_rings=64, per_connection=16),
                      lambda prompt: Policy(tiny_bundle, None, instruction=prompt))
    default = tiny_bundle.manifest["prompt"]["default_instruction"]
    victim_conn = object()
    victim, status = table.open(victim_conn, "victim", None, None, default)
    victim.policy.ring.push(np.ones(64, np.float32))
    for c in range(64):
        conn = object()
        for k in range(16):
            table.open(conn, f"attacker-{c}-{k}", None, None, default)
        with pytest.raises(RingRefused, match="holds 16 rings"):
            table.open(conn, f"attacker-{c}-extra", None, None, default)
        table.release(conn)
    ring, status = table.open(victim_conn, "victim", None, None, default)
    assert ring is victim and status == "kept" and len(ring.policy.ring) == 1
    assert len(table) <= 64 and table.evicted >= 1024 - 64


def test_one_connection_naming_new_ids_is_refused_past_its_share_over_the_wire(server, onboard):
    """Over the wire: one connection naming new robot ids gets an error past 16; another robot driving
    meanwhile gets exactly its onboard chunks."""
    frames = robot_frames(23, 4)
    policy = onboard()
    expected = [policy.infer(f).chunk for f in frames]
    victim, attacker = open_client(server.url), open_client(server.url)
    try:
        assert np.array_equal(ask(victim, {"image": rgb(frames[0]), "robot_id": "v"})["actions"], expected[0])
        small = np.zeros((8, 8, 3), np.uint8)
        replies = [ask(attacker, {"image": small, "robot_id": f"new-{k}"}) for k in range(20)]
        assert all("actions" in r for r in replies[:16])  # its share: 16 rings per connection
        assert all(r.get("code") == "ring" and "holds 16 rings" in r["error"] for r in replies[16:])
        for i, frame in enumerate(frames[1:], 1):
            assert np.array_equal(ask(victim, {"image": rgb(frame), "robot_id": "v"})["actions"], expected[i])
    finally:
        victim.close()
        attacker.close()
