"""Frame spacing, the same in training and driving: a bundle trained on step recordings (one frame per 0.4 s move),
driven continuously at 10 Hz in the simulator, fills its ring at 0.4 s; a drive mode that cannot keep the spacing is
refused, naming both."""

import json
import logging
import time

import numpy as np
import pytest

from runtime.control.config import DriveConfig
from runtime.control.session import DriveSpec, drive
from runtime.hardware import Camera
from runtime.policy.onboard import RingPacer
from runtime.policy.select import PolicySpec
from sim.world import SimMotor, SimWorld, random_layout

FPS = 10.0


def with_driving(bundle_dir, spacing, mode):
    """The bundle as training on such recordings writes it: bundle.json's top-level "driving" key."""
    manifest_path = bundle_dir / "bundle.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["driving"] = {"mode": mode, "discrete": False, "frame_spacing_s": spacing, "source": "recordings"}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return bundle_dir


class TenHertz(Camera):
    """The simulated camera delivering a frame every 0.1 s, as a 10 fps camera would (stamped at capture)."""

    name = "sim@10Hz"

    def __init__(self, inner):
        self.inner, self.next = inner, None

    def read(self, timeout=0.5):
        now = time.monotonic()
        self.next = now if self.next is None else self.next
        if self.next > now:
            time.sleep(self.next - now)
        self.next += 1 / FPS
        return self.inner.read(timeout)

    def disconnect(self):
        self.inner.disconnect()


def test_ring_entries_one_spacing_apart_whatever_the_frame_rate():
    rng = np.random.default_rng(0)
    pacer = RingPacer(0.4)
    stamps = np.arange(0, 6, 0.1) + rng.uniform(-0.02, 0.02, 60)  # 10 Hz with jitter
    taken = [t for t in stamps if pacer.take(t)]
    assert taken[0] == stamps[0] and len(taken) == 15
    assert np.all(np.abs(np.diff(taken) - 0.4) <= 0.05)  # the nearest frame to each due time, no drift
    pacer.reset()
    slow = np.arange(0, 5, 0.5)  # frames slower than the spacing: every one enters
    assert [pacer.take(t) for t in slow] == [True] * len(slow)


def test_step_trained_bundle_driven_continuously_at_10_hz_fills_its_ring_at_the_recorded_spacing(
        bundle_copy, caplog, signal_handlers):
    bundle = with_driving(bundle_copy, 0.4, "step")
    world = SimWorld(random_layout(4))
    spec = DriveSpec(policy=PolicySpec(bundle, backend="ort-cpu"),
                     loop=DriveConfig(mode="continuous", rate=20, max_steps=50, status=False))
    caplog.set_level(logging.DEBUG, logger="runtime.policy.onboard")
    start = time.monotonic()
    code = drive(spec, camera=TenHertz(world.camera(64, 36)), motor=SimMotor(world))
    elapsed = time.monotonic() - start
    assert code == 0
    entries = [r.args[1] for r in caplog.records
               if r.name == "runtime.policy.onboard" and r.msg.startswith("ring entry")]
    window = json.loads((bundle / "bundle.json").read_text())["policy"]["window"]
    # 50 frames at 10 Hz = 5 s: every frame ran the model, one in four entered the ring
    assert elapsed >= 4.5 and 11 <= len(entries) + 1 <= 14
    gaps = np.diff(entries)
    assert np.all(np.abs(gaps - 0.4) <= 1 / FPS / 2 + 0.03), gaps
    # every full window of W ring entries spans W-1 spacings of the clock, as the recordings' windows did
    spans = [entries[i + window - 1] - entries[i] for i in range(len(entries) - window + 1)]
    assert spans and np.allclose(spans, (window - 1) * 0.4, atol=1 / FPS)


def test_a_mode_that_cannot_keep_the_spacing_is_refused_naming_both(bundle_copy, caplog, signal_handlers):
    bundle = with_driving(bundle_copy, 0.1, "continuous")
    world = SimWorld(random_layout(4))
    spec = DriveSpec(policy=PolicySpec(bundle, backend="ort-cpu"),
                     loop=DriveConfig(mode="step", step_duration=0.4, max_steps=3, status=False))
    code = drive(spec, camera=world.camera(64, 36), motor=SimMotor(world))
    assert code == 1
    message = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "trained on frames 0.1 s apart" in message and "--step-duration 0.4 s" in message
    assert "--mode continuous" in message


@pytest.mark.parametrize("spacing", ["fast", 0])
def test_a_bad_spacing_in_the_bundle_is_named(bundle_copy, spacing):
    from runtime.policy.bundle import BundleError, load_bundle
    from runtime.policy.onboard import bundle_frame_spacing

    bundle = load_bundle(with_driving(bundle_copy, spacing, "step"))
    with pytest.raises(BundleError, match="driving.frame_spacing_s must be a positive number"):
        bundle_frame_spacing(bundle)
