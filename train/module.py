"""The LightningModule that fits Mobile-VLA: LoRA on the frozen Kosmos-2, the ACT token and the head.

    module = MobileVLAModule(config.to_dict(), LoraSettings().to_dict(), lr=1e-3, lora_lr=2e-5)
    lightning.Trainer(max_epochs=8).fit(module, train_loader, val_loader)      # (python -m train.fit)

Huber loss on the normalised action chunk, masked past each episode's end;
logged per step and epoch: loss, RMSE overall and per axis. The head, the
ACT token and the LoRA weights have their own learning rates, with an
optional linear warm-up.

`trainer.ckpt` (for `--resume`) holds what training changes: the trainable
weights, the buffers, the optimizer and the loops, not the frozen Kosmos-2
weights (6.6 GB at the real size, and Lightning serialises a checkpoint in
memory before writing it: every save doubled the process's memory). In their
place a fingerprint of the frozen weights; resuming takes them from the model
the run builds again (the same --preset/--weights/--init) and refuses to go
on if they are not the weights the run was trained on.
"""

from __future__ import annotations

import hashlib

import lightning as L
import torch
import torch.nn.functional as F

from train.batches import batch_prompt
from train.config import MobileVLAConfig
from train.lora import LoraSettings, apply_lora
from train.model import MobileVLA, build_kosmos

FROZEN_ENTRY = "frozen_weights"  # trainer.ckpt: the frozen weights' names count and fingerprint, not the weights
FINGERPRINT_SAMPLES = 64  # values sampled from each frozen tensor for the fingerprint


class ResumeMismatch(ValueError):
    """--resume on a model whose frozen weights are not those the run was trained on."""


def frozen_weight_names(module: torch.nn.Module) -> list[str]:
    """state_dict keys of the parameters that do not train (tied ones under every name they have)."""
    return sorted(n for n, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad)


def weights_fingerprint(state: dict, names: list[str]) -> str:
    """sha256 over each tensor's name, shape and FINGERPRINT_SAMPLES evenly spaced values: a change of base
    weights (another hub revision, another --init, other random weights) changes it; cheap on a GPU."""
    digest = hashlib.sha256()
    for name in names:
        t = state[name].detach()
        flat = t.reshape(-1)
        sample = flat[:: max(1, flat.numel() // FINGERPRINT_SAMPLES)][:FINGERPRINT_SAMPLES]
        digest.update(f"{name}{tuple(t.shape)}".encode())
        digest.update(sample.float().cpu().numpy().tobytes())
    return digest.hexdigest()


class MobileVLAModule(L.LightningModule):
    # lr has no default here: train.fit.FitOptions owns the learning rates (the head's 1e-3, LoRA's 2e-5)
    def __init__(self, model_config: dict, lora: dict, lr: float, weight_decay: float = 0.0,
                 huber_delta: float = 1.0, warmup_steps: int = 0, act_lr: float | None = None,
                 lora_lr: float | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.config = MobileVLAConfig.from_dict(model_config)
        # SDPA attention for training: 2-3x faster than eager on CPU; the same weights export with eager.
        kosmos = build_kosmos(self.config, attn_implementation="sdpa")
        self.model = apply_lora(MobileVLA(self.config, kosmos=kosmos), LoraSettings.from_dict(lora))
        self.axes = self.config.axis_names

    def forward(self, batch):
        prompt = batch_prompt(batch)
        if "window_index" not in batch:
            return self.model(batch["pixel_values"], prompt)
        # Episode batches: each frame through the VLM once, then every window of it through the head.
        features = self.model.frame_features(batch["pixel_values"], prompt)  # (F, D), prompt row per frame
        return self.model.head(features[batch["window_index"]])  # (windows, W, N, A)

    def _step(self, batch, stage: str):
        pred = self(batch)
        mask = batch["mask"].unsqueeze(-1).expand_as(pred)
        denom = mask.sum().clamp(min=1)
        loss = (F.huber_loss(pred, batch["targets"], reduction="none", delta=self.hparams.huber_delta)
                * mask).sum() / denom
        sq = ((pred - batch["targets"]) ** 2) * mask
        on_step = stage == "train"
        logs = {f"{stage}/loss": loss, f"{stage}/rmse": torch.sqrt(sq.sum() / denom)}
        per_axis = mask[..., 0].sum().clamp(min=1)
        for i, name in enumerate(self.axes):
            logs[f"{stage}/rmse_{name}"] = torch.sqrt(sq[..., i].sum() / per_axis)
        self.log_dict(logs, on_step=on_step, on_epoch=True, prog_bar=(stage == "val"),
                      batch_size=pred.shape[0], sync_dist=not on_step)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        # Three groups: the head (--lr), the ACT token (--act-lr) and the LoRA weights (--lora-lr), each
        # defaulting to --lr. A slow LoRA matters on tiny: at the head's 1e-3, LoRA moved the features
        # under the head and erased the left/right instruction (first-move side 30% vs 100% frozen);
        # at 2e-5 it kept 90% (measured on sim.synth episodes, 300 steps).
        act = self.model.action_token
        lora = [p for n, p in self.named_parameters() if p.requires_grad and "lora_" in n]
        taken = {id(act), *map(id, lora)}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        lr = self.hparams.lr
        groups = [{"params": rest, "name": "head"},
                  {"params": [act], "lr": lr if self.hparams.act_lr is None else self.hparams.act_lr, "name": "act"}]
        if lora:
            groups.append({"params": lora, "lr": lr if self.hparams.lora_lr is None else self.hparams.lora_lr,
                           "name": "lora"})
        opt = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if not self.hparams.warmup_steps:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / self.hparams.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Leave the frozen weights out of trainer.ckpt; keep their fingerprint (see the module docstring)."""
        names = frozen_weight_names(self)
        state = checkpoint["state_dict"]
        if not all(name in state for name in names):  # a sharded strategy (FSDP) fills it on rank 0 only: as is
            return
        checkpoint[FROZEN_ENTRY] = {"count": len(names), "fingerprint": weights_fingerprint(state, names)}
        frozen = set(names)
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k not in frozen}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """--resume: the frozen weights come from this run's own model, once it is known they are the same."""
        saved = checkpoint.get(FROZEN_ENTRY)
        if saved is None:  # a checkpoint written with every weight in it
            return
        names = frozen_weight_names(self)
        own = self.state_dict()
        found = {"count": len(names), "fingerprint": weights_fingerprint(own, names)}
        if found != saved:
            raise ResumeMismatch(f"--resume: the frozen Kosmos-2 weights differ from those the run was trained on "
                             f"({saved['count']} tensors, fingerprint {saved['fingerprint'][:12]}; this run built "
                             f"{found['count']}, {found['fingerprint'][:12]}): resume with the run's own --preset, "
                             f"--weights and --init")
        checkpoint["state_dict"].update({k: own[k] for k in names})
