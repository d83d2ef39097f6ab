"""Model configuration and presets.

    from train.config import preset_config
    cfg = preset_config("tiny")               # or "small", "kosmos2"
    cfg = preset_config("tiny", window=4, action_axes=3)

Presets
- `kosmos2`: the real Kosmos-2 (1.66 B parameters), weights from the hub id
  or a local folder (`weights=`); `--random-weights` builds it with no download.
- `small`: the real layer widths (vision 1024, text 2048) with 2 layers each
  and the local tokenizer: per-layer cost like the real model, in seconds.
- `tiny`: the same architecture at a few hundred thousand parameters, random
  init from a seed and the local tokenizer. Tests and the demo use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from runtime.policy.preprocess import PreprocessConfig
from runtime.policy.prompt import DEFAULT_INSTRUCTION, DEFAULT_TEMPLATE, LAYOUTS
from train.tokenizer import KOSMOS2_HUB_ID, tiny_vocab

PRESETS = ("tiny", "small", "kosmos2")
CONFIG_VERSION = 1


@dataclass(frozen=True)
class MobileVLAConfig:
    """Everything needed to rebuild the model and to serve it; saved as config.json."""

    preset: str  # one of PRESETS
    kosmos: dict  # Kosmos2Config kwargs (text_config, vision_config, latent_query_num)
    tokenizer: str  # "local" (train.tokenizer) or a hub id / folder of the Kosmos-2 tokenizer
    weights: str | None = None  # hub id or folder of pretrained Kosmos-2 weights; None = random init
    seed: int = 0  # init seed for random weights, ACT and the head
    window: int = 8  # W: frames the action head sees
    chunk: int = 10  # N: future actions predicted per window position
    action_axes: int = 2  # 2 = (linear_x, linear_y); 3 adds angular_z
    head_hidden: int = 512  # LSTM hidden size of the action head
    head_layers: int = 4  # LSTM layers of the action head
    # Widths of the head MLP's hidden layers (ReLU between, tanh out); None = (head_hidden, head_hidden), ours.
    # The original Mobile-VLA head is (1024, 512, 256).
    head_mlp: tuple[int, ...] | None = None
    prompt_template: str = DEFAULT_TEMPLATE
    # runtime.policy.prompt layout: "mobile-vla" (ours) or "robovlms-fallback" (what imported checkpoints were
    # trained on)
    prompt_layout: str = "mobile-vla"
    default_instruction: str = DEFAULT_INSTRUCTION
    max_text_tokens: int = 48  # text positions (template + instruction + pads) in the fixed-length prompt
    action_range: float = 1.15  # raw actions are clamped to +-action_range, then divided by it -> [-1, 1]
    action_units: tuple[str, ...] = ("m/s", "m/s", "rad/s")  # robot units per axis after un-normalising
    preprocess: dict = field(default_factory=lambda: PreprocessConfig().to_dict())

    @property
    def latent_query_num(self) -> int:
        return int(self.kosmos.get("latent_query_num", 64))

    @property
    def hidden_size(self) -> int:
        return int(self.kosmos["text_config"]["embed_dim"])

    @property
    def image_size(self) -> int:
        return int(self.kosmos["vision_config"]["image_size"])

    @property
    def head_mlp_widths(self) -> tuple[int, ...]:
        return tuple(self.head_mlp) if self.head_mlp is not None else (self.head_hidden, self.head_hidden)

    @property
    def axis_names(self) -> tuple[str, ...]:
        return ("linear_x", "linear_y", "angular_z")[: self.action_axes]

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocess)

    def validate(self) -> MobileVLAConfig:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; expected one of {', '.join(PRESETS)}")
        if self.action_axes not in (2, 3):
            raise ValueError(f"action_axes must be 2 or 3, got {self.action_axes}")
        for name in ("window", "chunk", "head_hidden", "head_layers", "max_text_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.head_mlp is not None and (not self.head_mlp or any(int(w) < 1 for w in self.head_mlp)):
            raise ValueError(f"head_mlp must be a non-empty list of widths >= 1, got {self.head_mlp}")
        if self.prompt_layout not in LAYOUTS:
            raise ValueError(f"prompt_layout must be one of {', '.join(LAYOUTS)}, got {self.prompt_layout!r}")
        if self.prompt_layout == "robovlms-fallback" and self.max_text_tokens < self.latent_query_num:
            raise ValueError(f"robovlms-fallback needs max_text_tokens >= Q={self.latent_query_num}, "
                             f"got {self.max_text_tokens}")
        if not self.action_range > 0:
            raise ValueError(f"action_range must be > 0, got {self.action_range}")
        if self.preprocess["size"] != self.image_size:
            raise ValueError(f"preprocess size {self.preprocess['size']} != vision image_size {self.image_size}")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["action_units"] = list(self.action_units)
        d["head_mlp"] = None if self.head_mlp is None else [int(w) for w in self.head_mlp]
        d["config_version"] = CONFIG_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> MobileVLAConfig:
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("preset", "kosmos", "tokenizer") if k not in d]
        if missing:
            raise ValueError(f"{source}: missing field(s) {', '.join(missing)}")
        kwargs = {k: v for k, v in d.items() if k in known}
        if "action_units" in kwargs:
            kwargs["action_units"] = tuple(kwargs["action_units"])
        if kwargs.get("head_mlp") is not None:
            kwargs["head_mlp"] = tuple(int(w) for w in kwargs["head_mlp"])
        try:
            return cls(**kwargs).validate()
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from e


def _tiny_kosmos(vocab_size: int) -> dict:
    # Init scales: with Kosmos-2's defaults (0.02, factor 1) a random 32/64-wide model writes image
    # embeddings ~1/200 the size of its text embeddings and the ACT feature hardly changes with the
    # image, so nothing image-dependent can be learned through the frozen tower; text init 0.1 and
    # vision factor 2 keep both the image and the instruction visible in the ACT feature.
    # 16 latent queries (Kosmos-2 has 64): with 64, ACT's near-uniform random attention gave the one word
    # that differs between "... bottle on the left" and "... on the right" 1/84 of its weight, and a
    # head trained on the frozen features guessed the side (54% on the simulator's first frames); with
    # 16 and factor 2 a linear probe reads the side at 100% and the head gets 90%, and prompts are
    # half as long (measured on 200 sim.synth episodes).
    return {
        "latent_query_num": 16,
        "text_config": {
            "vocab_size": vocab_size,
            "embed_dim": 64,
            "layers": 2,
            "ffn_dim": 128,
            "attention_heads": 2,
            "max_position_embeddings": 512,
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "init_std": 0.1,
        },
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 224,
            "patch_size": 14,
            "initializer_factor": 2.0,
        },
    }


def _real_kosmos(text_layers: int = 24, vision_layers: int = 24, vocab_size: int = 65037) -> dict:
    # Kosmos2Config() defaults (docs/model.md); only depth and vocab vary between presets.
    return {
        "latent_query_num": 64,
        "text_config": {
            "vocab_size": vocab_size,
            "embed_dim": 2048,
            "layers": text_layers,
            "ffn_dim": 8192,
            "attention_heads": 32,
            "max_position_embeddings": 2048,
        },
        "vision_config": {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
        },
    }


def preset_config(name: str, random_weights: bool = False, weights: str | None = None, **overrides) -> MobileVLAConfig:
    """The config of a preset; `overrides` replace fields (window=4, action_axes=3, ...)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    local_vocab = len(tiny_vocab())
    if name == "tiny":
        # One LSTM layer: on frozen tiny features a 2-layer head sat on a plateau (guessing the side)
        # for ~1000 steps that a 1-layer one left in a few hundred (measured on sim.synth episodes).
        cfg = MobileVLAConfig(preset=name, kosmos=_tiny_kosmos(local_vocab), tokenizer="local", head_hidden=128,
                              head_layers=1)
    elif name == "small":
        cfg = MobileVLAConfig(preset=name, kosmos=_real_kosmos(2, 2, local_vocab), tokenizer="local")
    else:
        if random_weights:
            # Real sizes, no download: the local tokenizer stands in for the hub's (ids stay < 65037).
            cfg = MobileVLAConfig(preset=name, kosmos=_real_kosmos(), tokenizer="local")
        else:
            src = weights or KOSMOS2_HUB_ID
            cfg = MobileVLAConfig(preset=name, kosmos=_real_kosmos(), tokenizer=src, weights=src)
    return replace(cfg, **overrides).validate()
