"""LoRA on the frozen Kosmos-2 with peft, and folding it back in.

    from train.lora import LoraSettings, apply_lora, merge_lora
    apply_lora(model, LoraSettings(r=32, alpha=16, dropout=0.1))
    ...train...
    merge_lora(model)          # plain Kosmos2Model again, LoRA folded into its weights

Default targets are the text decoder and the image-to-text projection
(attention q/k/v/out, FFN fc1/fc2, the projection's dense); `vision=True`
adds the vision tower. Names are matched by a regex anchored at the
Kosmos-2 module root, so nothing is reached by accident (docs/original-stack.md: a bare
suffix list also hits the vision tower).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

LAYER_SUFFIXES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "dense")


@dataclass(frozen=True)
class LoraSettings:
    r: int = 32  # rank of the update
    alpha: int = 16  # scale = alpha / r
    dropout: float = 0.1  # dropout on the LoRA branch input
    text: bool = True  # adapt the text decoder
    projection: bool = True  # adapt the image-to-text projection
    vision: bool = False  # adapt the vision tower

    def target_regex(self) -> str:
        roots = [name for name, on in (("text_model", self.text), ("image_to_text_projection", self.projection),
                                       ("vision_model", self.vision)) if on]
        if not roots:
            raise ValueError("LoRA needs at least one of text, projection, vision")
        return rf"^({'|'.join(roots)})(\..*)?\.({'|'.join(LAYER_SUFFIXES)})$"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LoraSettings:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def has_lora(model) -> bool:
    from peft import PeftModel  # noqa: PLC0415  peft: the LoRA paths only

    return isinstance(model.kosmos, PeftModel)


def apply_lora(model, settings: LoraSettings):
    """Wrap model.kosmos with LoRA layers; ACT and the head stay trainable. Returns the model."""
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415  peft: the LoRA paths only

    if has_lora(model):
        raise ValueError("this model already has LoRA layers")
    cfg = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                     target_modules=settings.target_regex(), bias="none")
    model.kosmos = get_peft_model(model.kosmos, cfg)
    model.lora_settings = settings
    model.freeze_vlm_except_lora()
    return model


def merge_lora(model):
    """Fold the LoRA weights into the base weights (peft's merge_and_unload). Returns the model."""
    if not has_lora(model):
        raise ValueError("this model has no LoRA layers to merge")
    model.kosmos = model.kosmos.merge_and_unload()
    model.lora_settings = None
    model.freeze_vlm()
    return model
