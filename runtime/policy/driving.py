"""How a policy was validated and should be driven: the `driving` record of a checkpoint and a bundle.

    from runtime.policy.driving import Driving, driving_settings
    bundle.driving                                   # Driving(mode="step", discrete=True, frame_spacing_s=0.4, ...)
    settings = driving_settings(bundle.driving, mode=args.mode, discrete=args.discrete)  # None = the bundle's
    log.info(settings.describe())                    # "mode step (bundle), discrete moves (--discrete), ..."

`train.fit` writes it into the checkpoint's `config.json` from the data and
its options, `export.to_onnx` copies it into `bundle.json`, and everything
that drives or evaluates a bundle (`runtime.drive`, `sim.drive`,
`sim.evaluate`) takes it as its defaults and says so at start, so the
figures measured offline and in the simulator describe the policy the robot
runs. Keys (docs/bundle-format.md):

- `mode`: `step` (one move per action for `frame_spacing_s`, then a stop: how
  key-press recordings were made) or `continuous` (the newest action at the
  control rate);
- `discrete`: snap each axis to the demonstrated moves (-range, 0, +range);
- `frame_spacing_s`: seconds between the frames of a training window (step
  recordings: the move's duration, 0.4 s; continuous recordings: 1 / rate);
- `source`: where these values came from.

A bundle without the record gets the defaults below, with a source saying
they were defaulted: its checkpoint carried none (made before train.fit wrote
one, or by a tool that writes none).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MODES = ("step", "continuous")


@dataclass(frozen=True)
class Driving:
    mode: str = "step"  # "step" or "continuous" (MODES)
    discrete: bool = False  # snap each axis to the demonstrated moves (-range, 0, +range)
    frame_spacing_s: float = 0.4  # seconds between a training window's frames (the collector's 0.4 s moves)
    # where these values came from
    source: str = ("defaulted: the bundle has no 'driving' record (its checkpoint carried none: one made before "
                   "train.fit wrote it, or by a tool that writes none)")

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"driving.mode: expected one of {', '.join(MODES)}, found {self.mode!r}")
        if not self.frame_spacing_s > 0:
            raise ValueError(f"driving.frame_spacing_s: expected seconds > 0, found {self.frame_spacing_s!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "driving") -> Driving:
        """The record as written, or the defaults when `d` is None (an older bundle or checkpoint)."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected an object with mode, discrete, frame_spacing_s, found {d!r}")
        known = {k: d[k] for k in ("mode", "discrete", "frame_spacing_s", "source") if k in d}
        try:
            return cls(**{**known, "discrete": bool(known.get("discrete", False)),
                          "frame_spacing_s": float(known.get("frame_spacing_s", cls.frame_spacing_s))})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from e


@dataclass(frozen=True)
class DrivingSettings:
    """What a drive or an evaluation uses: the bundle's record, with the caller's overrides."""

    mode: str  # "step" or "continuous"
    discrete: bool  # snap to the demonstrated moves
    step_duration: float  # seconds per move in step mode
    overridden: tuple[str, ...]  # which of mode / discrete / step_duration the caller set
    source: str  # the record's source

    def describe(self) -> str:
        def who(name: str) -> str:
            return "as asked" if name in self.overridden else "bundle"

        return (f"mode {self.mode} ({who('mode')}), {'discrete moves' if self.discrete else 'raw actions'} "
                f"({who('discrete')}), {self.step_duration:g} s per step-mode move ({who('step_duration')}); "
                f"the bundle's record: {self.source}")


def driving_settings(driving: Driving, mode: str | None = None, discrete: bool | None = None,
                     step_duration: float | None = None) -> DrivingSettings:
    """The record's values where the caller passed None."""
    asked = {"mode": mode, "discrete": discrete, "step_duration": step_duration}
    overridden = tuple(k for k, v in asked.items() if v is not None)
    return DrivingSettings(mode=driving.mode if mode is None else mode,
                           discrete=driving.discrete if discrete is None else bool(discrete),
                           step_duration=driving.frame_spacing_s if step_duration is None else float(step_duration),
                           overridden=overridden, source=driving.source)
