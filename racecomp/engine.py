"""The training loop shared by all studies: AMP, gradient accumulation, clipping, AdamW with warm-up and
cosine decay, fine-tuning strategies, staged unfreezing, checkpoints and exact resume.

A study supplies `compute_loss(model, batch) -> (loss, {name: float})` and, optionally,
`select(model) -> float` (higher is better) to choose the best epoch on a held-out split.
Precision policy lives here, never in models.

Under torchrun (racecomp.distributed) the model trains wrapped in DistributedDataParallel: each process
runs its own slice of the sampler's epoch with --batch-size images per micro-batch, gradients are
averaged over processes, and only rank 0 writes checkpoints and prints. BatchNorm layers in train mode
normalize with per-process batch statistics (as plain DDP does); the running statistics kept are rank 0's.
"""
import contextlib
import dataclasses
import math
import os
import random
import time

import numpy as np
import torch

from racecomp import distributed, encoders, files
from racecomp.errors import InputError
from racecomp.finetune import (FINETUNE_STRATEGIES, apply_unfreeze, check_unfreeze, configure_finetune,
                               parse_unfreeze, set_train_mode)
from racecomp.progress import EVERY_SECONDS, format_seconds

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


class NonFiniteLossError(RuntimeError):
    pass


# ---------------------------------------------------------------- precision

def amp_context(device, amp):
    """Autocast context for `amp` in {'bf16','fp16','off'}; a no-op context for 'off'."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def make_scaler(device, amp):
    """GradScaler that is active only under fp16 (bf16 and fp32 need no loss scaling) and always called."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=(amp == "fp16"))


# ---------------------------------------------------------------- optimizer and schedule

SCHEDULES = ("cosine", "cosine-stages", "linear")
OPTIMIZERS = ("adamw", "sgd")
SGD_MOMENTUM = 0.9  # arcface_torch's and QuantFace's


def lr_factor(step, total_steps, warmup_steps, min_factor=0.0, schedule="cosine", restarts=()):
    """Multiplier of the base learning rate at optimizer step `step` (0-based): linear warm-up over the first
    `warmup_steps`, then, over the rest of `total_steps`,
      cosine         one cosine from 1 to min_factor;
      cosine-stages  a cosine from 1 to min_factor restarted at each step of `restarts` (the first step of each
                     staged-unfreezing stage), as a CosineAnnealingLR made anew for each stage;
      linear         a straight line from 1 to min_factor (arcface_torch's PolynomialLRWarmup, power 1).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    start, end = warmup_steps, total_steps
    if schedule == "cosine-stages":
        for boundary in sorted(restarts):
            if boundary <= step:
                start = max(start, boundary)
            elif boundary < end:
                end = boundary
    progress = min(1.0, max(0.0, (step - start) / max(1, end - start)))
    shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_factor + (1.0 - min_factor) * shape


def build_optimizer(model, lr, encoder_lr=None, weight_decay=0.05, extra_modules=(), optimizer="adamw"):
    """AdamW (or SGD with momentum 0.9) over every parameter (frozen ones simply have no gradient and are
    skipped).

    Parameters under `encoder.` get `encoder_lr` (default `lr`); 1-D parameters (norms, biases) get no
    weight decay. `extra_modules` (e.g. a margin head) train at `lr`.
    """
    if optimizer not in OPTIMIZERS:
        raise InputError(f"--optimizer {optimizer!r}: must be one of {', '.join(OPTIMIZERS)}")
    groups = {}
    named = list(model.named_parameters())
    for index, module in enumerate(extra_modules):
        named += [(f"extra{index}.{name}", p) for name, p in module.named_parameters()]
    for name, param in named:
        is_encoder = name.startswith("encoder.")
        decay = param.ndim > 1
        key = ("encoder" if is_encoder else "rest", decay)
        groups.setdefault(key, []).append(param)
    param_groups = []
    for (part, decay), params in sorted(groups.items()):
        group_lr = encoder_lr if (part == "encoder" and encoder_lr is not None) else lr
        param_groups.append({"params": params, "lr": group_lr, "weight_decay": weight_decay if decay else 0.0,
                             "name": f"{part}{'' if decay else '_no_decay'}"})
    if optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=SGD_MOMENTUM)
    return torch.optim.AdamW(param_groups, lr=lr)


def build_scheduler(optimizer, total_steps, warmup_steps, schedule="cosine", restarts=()):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, schedule=schedule, restarts=restarts))


# ---------------------------------------------------------------- reproducibility

def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _rng_to_plain(state):
    """RNG states as tensors and plain containers, so checkpoints load with weights_only=True."""
    python_state = state["python"]
    numpy_state = state["numpy"]
    plain = {"python": [python_state[0], list(python_state[1]), python_state[2]],
             "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
             "torch": state["torch"]}
    if "cuda" in state:
        plain["cuda"] = state["cuda"]
    return plain


def _restore_rng(plain):
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(plain["torch"])
    if "cuda" in plain and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(plain["cuda"])


# ---------------------------------------------------------------- settings

@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How the loop trains, checked on construction (ValueError naming the flag); the rest of a Trainer
    (stage prefixes, schedule length) is derived from the model and `steps_per_epoch`."""
    epochs: int = 1             # passes over the loader
    accum_steps: int = 1        # micro-batches per optimizer step
    amp: str = "off"            # key of AMP_DTYPES
    clip_grad: float = 0.0      # max gradient L2 norm, 0: none
    warmup_steps: int = 0       # optimizer steps of linear warm-up
    finetune: str = "full"      # one of FINETUNE_STRATEGIES
    unfreeze: tuple = ()        # epochs at which the last 1, 2, ... encoder stages open (parse_unfreeze's result)
    log_every: int = 10         # optimizer steps between progress lines (and at least one per 10 s), 0: none
    schedule: str = "cosine"    # one of SCHEDULES (cosine-stages restarts at each --unfreeze epoch)

    def __post_init__(self):
        object.__setattr__(self, "unfreeze", tuple(self.unfreeze))  # a list is accepted, stored as a tuple
        for name in ("epochs", "warmup_steps", "log_every"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 0")
        if self.accum_steps < 1:
            raise InputError(f"--accum-steps {self.accum_steps}: must be >= 1")
        if self.amp not in AMP_DTYPES:
            raise InputError(f"--amp {self.amp!r}: must be one of {', '.join(AMP_DTYPES)}")
        if not 0.0 <= self.clip_grad < math.inf:
            raise InputError(f"--clip-grad {self.clip_grad}: must be a finite max norm >= 0 (0: no clipping)")
        if self.finetune not in FINETUNE_STRATEGIES:
            raise InputError(f"--finetune {self.finetune!r}: must be one of {', '.join(FINETUNE_STRATEGIES)}")
        check_unfreeze(self.unfreeze, f"--unfreeze {','.join(map(str, self.unfreeze))}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"--schedule {self.schedule!r}: must be one of {', '.join(SCHEDULES)}")
        if self.schedule == "cosine-stages" and not self.unfreeze:
            raise InputError("--schedule cosine-stages restarts the cosine at each --unfreeze stage: give --unfreeze")
        if self.unfreeze and self.finetune != "full":
            raise InputError(f"--unfreeze schedules apply to --finetune full only (got --finetune {self.finetune})")

    @classmethod
    def from_args(cls, args):
        """From an argparse namespace with cli.add_training_arguments' flags (--unfreeze as text, '1,3')."""
        return cls(epochs=args.epochs, accum_steps=args.accum_steps, amp=args.amp, clip_grad=args.clip_grad,
                   warmup_steps=args.warmup_steps, finetune=args.finetune, unfreeze=parse_unfreeze(args.unfreeze),
                   log_every=args.log_every, schedule=args.schedule)


# ---------------------------------------------------------------- the loop

def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class Trainer:
    """Runs epochs of `compute_loss` with one code path for every precision and accumulation window.

    `settings` (TrainingSettings) says how; `steps_per_epoch` (optimizer steps, ceil(micro-batches /
    accum_steps)) sizes the warm-up + cosine schedule over settings.epochs; with settings.unfreeze the
    stages come from the model itself (encoders.encoder_stage_prefixes).

    An optimizer step happens every `accum_steps` micro-batches; each micro-batch's loss is divided by
    the size of its window, and the last window of an epoch may be shorter (then divided by its real
    size), so 2 x batch 4 gives the gradient of batch 8. The scheduler steps once per optimizer step.
    Checkpoints (flat dict, atomic) are written every epoch to `checkpoint.pth`, and `best.pth` when
    `select` improves; `resume()` restores model, optimizer, scheduler, scaler, epoch, step and RNG.

    With world size > 1, `compute_loss` receives the DDP wrapper (`self.ddp_model`), rebuilt whenever
    the set of trainable parameters changes (staged unfreezing), because DDP reduces only the
    parameters that required grad when it was built; gradients are synchronized only on the last
    micro-batch of each accumulation window (`no_sync` before it). Everything else (fine-tuning
    strategies, train mode, checkpoints with unprefixed keys, `select`) acts on `self.model`, the
    unwrapped module. `select` runs on every rank with identical weights and buffers: it may shard its
    split and gather (studies.upscale.mean_psnr_selector does), and must return the same score everywhere.
    """

    def __init__(self, model, compute_loss, optimizer, out_dir, settings, steps_per_epoch, device="cpu",
                 select=None, extra_modules=(), run_args=None):
        if not isinstance(settings, TrainingSettings):
            raise TypeError(f"settings must be a TrainingSettings (from a script's flags: "
                            f"TrainingSettings.from_args(args)), got {type(settings).__name__}")
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch {steps_per_epoch}: must be >= 1 (optimizer steps per epoch, "
                             f"ceil(micro-batches / accum_steps))")
        self.model = model
        self.compute_loss = compute_loss
        self.optimizer = optimizer
        self.out_dir = out_dir
        self.settings = settings
        self.device = torch.device(device)
        self.epochs = settings.epochs  # fit() stops here; the schedule always spans settings.epochs
        # Staged unfreezing opens the model's own encoder stages; a model without them is refused here.
        self.stage_prefixes = encoders.encoder_stage_prefixes(model) if settings.unfreeze else ()
        self.select = select
        self.extra_modules = list(extra_modules)
        self.run_args = run_args or {}
        self.scaler = make_scaler(device, settings.amp)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = settings.epochs * steps_per_epoch
        restarts = tuple(epoch * steps_per_epoch for epoch in settings.unfreeze)
        self.scheduler = build_scheduler(optimizer, max(1, self.total_steps), settings.warmup_steps,
                                         settings.schedule, restarts)
        self.epoch = 0          # next epoch to run
        self.step = 0           # optimizer steps done
        self.skipped_steps = 0  # fp16 steps the scaler skipped (inf/NaN gradients)
        self.best_score = None
        self.best_epoch = None
        self.history = []
        configure_finetune(model, settings.finetune)
        self.ddp_model = model
        self._ddp_trainable = None  # names of the parameters the current DDP wrapper reduces

    # -- checkpoints
    def _state(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "extra_modules": [m.state_dict() for m in self.extra_modules],
                "epoch": self.epoch, "step": self.step, "skipped_steps": self.skipped_steps,
                "best_score": self.best_score, "best_epoch": self.best_epoch, "history": self.history,
                "rng": _rng_to_plain(rng_state()), "args": self.run_args}

    def checkpoint_path(self, name="checkpoint.pth"):
        return os.path.join(self.out_dir, name)

    def resume(self, path=None):
        """Restore the state of `path` (default: checkpoint.pth); every rank loads the same file."""
        state = files.load_checkpoint(path or self.checkpoint_path())
        self.model.load_state_dict(state["model"])
        for module, module_state in zip(self.extra_modules, state["extra_modules"]):
            module.load_state_dict(module_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.skipped_steps = state["skipped_steps"]
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        self.history = list(state["history"])
        _restore_rng(state["rng"])
        if distributed.is_main():
            print(f"[resume] epoch {self.epoch}, optimizer step {self.step}")

    # -- one optimizer step
    def _optimizer_step(self):
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.settings.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, self.settings.clip_grad)
        scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if scale_before is not None and self.scaler.get_scale() < scale_before:
            self.skipped_steps += 1  # the scaler found inf/NaN gradients and skipped this step
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1

    # -- data parallelism
    def _wrap_for_ranks(self):
        """(Re)build the DDP wrapper when there are several processes and the trainable set changed."""
        if distributed.world_size() == 1:
            return
        trainable = tuple(name for name, p in self.model.named_parameters() if p.requires_grad)
        if trainable == self._ddp_trainable:
            return
        device_ids = [self.device] if self.device.type == "cuda" else None
        # Building the wrapper also broadcasts rank 0's parameters and buffers to every rank.
        self.ddp_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self._ddp_trainable = trainable

    def _gradient_sync(self, last_in_window):
        """no_sync() for micro-batches before the last of an accumulation window: one all-reduce per step."""
        if self.ddp_model is self.model or last_in_window:
            return contextlib.nullcontext()
        return self.ddp_model.no_sync()

    def train_epoch(self, loader):
        settings = self.settings
        frozen = ()
        if settings.unfreeze:
            frozen = apply_unfreeze(self.model, settings.unfreeze, self.stage_prefixes, self.epoch)
        self._wrap_for_ranks()
        set_train_mode(self.model, settings.finetune, frozen)
        for module in self.extra_modules:
            module.train()
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(self.epoch)
        n_micro = len(loader)
        started = last_line = time.time()
        seen = 0
        running = {}
        self.optimizer.zero_grad(set_to_none=True)
        for index, batch in enumerate(loader):
            window_start = index // settings.accum_steps * settings.accum_steps
            window = min(settings.accum_steps, n_micro - window_start)
            last_in_window = index + 1 == window_start + window
            batch = _to_device(batch, self.device)
            with self._gradient_sync(last_in_window):
                with amp_context(self.device, settings.amp):
                    loss, parts = self.compute_loss(self.ddp_model, batch)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"loss is {loss.item()} at epoch {self.epoch}, micro-batch {index}, optimizer step "
                        f"{self.step} (rank {distributed.rank()}); stopping. The last good checkpoint is "
                        f"{self.checkpoint_path()} (if it exists); lower the learning rate or use --amp bf16/off")
                self.scaler.scale(loss / window).backward()
            seen += _batch_size(batch)
            for key, value in {"loss": loss.item(), **parts}.items():
                running[key] = running.get(key, 0.0) + value
            if last_in_window:
                self._optimizer_step()
                # Every log_every steps, and at least every EVERY_SECONDS: slow steps never leave a run silent.
                due = settings.log_every and (self.step % settings.log_every == 0
                                              or time.time() - last_line >= EVERY_SECONDS)
                if due and distributed.is_main():
                    self._log(index + 1, n_micro, seen, started, running)
                    last_line = time.time()
        distributed.broadcast_buffers(self.model)  # rank 0's BatchNorm statistics everywhere, as saved
        # Every rank runs the same number of equal-size micro-batches (the sampler pads), so the mean of
        # the ranks' means is the mean over all draws.
        per_rank = distributed.all_gather_objects({key: value / max(1, n_micro) for key, value in running.items()})
        means = {key: math.fsum(part[key] for part in per_rank) / len(per_rank) for key in per_rank[0]}
        means["images_per_s"] = seen * len(per_rank) / max(1e-9, time.time() - started)
        return means

    def _log(self, done, n_micro, seen, started, running):
        elapsed = time.time() - started
        rate = seen / max(1e-9, elapsed)
        eta_epoch = elapsed / done * (n_micro - done)
        remaining_micro = (self.total_steps - self.step) * self.settings.accum_steps
        eta_total = format_seconds(elapsed / done * remaining_micro)
        rate *= distributed.world_size()  # every rank draws as many images as this one
        loss = running["loss"] / done  # this rank's; the epoch summary averages over ranks
        lr = self.optimizer.param_groups[0]["lr"]
        print(f"[train] epoch {self.epoch} step {self.step}/{self.total_steps} loss {loss:.4f} "
              f"lr {lr:.2e} {rate:.1f} img/s, epoch ETA {format_seconds(eta_epoch)}, run ETA {eta_total}", flush=True)

    def fit(self, loader):
        """Train from self.epoch to self.epochs, checkpointing each epoch; returns the history."""
        while self.epoch < self.epochs:
            record = {"epoch": self.epoch, **self.train_epoch(loader)}
            if self.select is not None:
                # Rank 0's score decides on every rank, so best_epoch agrees even if a selector does not.
                score = distributed.broadcast_object(float(self.select(self.model)))
                record["select_score"] = score
                if self.best_score is None or score > self.best_score:
                    self.best_score, self.best_epoch = score, self.epoch
                    record["best"] = True
            self.history.append(record)
            self.epoch += 1
            if distributed.is_main():
                if self.select is not None and record.get("best"):
                    files.save_checkpoint({"model": self.model.state_dict(), "epoch": self.epoch - 1,
                                           "extra_modules": [m.state_dict() for m in self.extra_modules],
                                           "args": self.run_args}, self.checkpoint_path("best.pth"))
                files.save_checkpoint(self._state(), self.checkpoint_path())
                summary = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float))
                print(f"[epoch {record['epoch']}] {summary}; checkpoint saved", flush=True)
            distributed.barrier()  # no rank reads checkpoint.pth / best.pth before rank 0 has written them
        if self.skipped_steps and distributed.is_main():
            print(f"[train] fp16: the gradient scaler skipped {self.skipped_steps} of {self.step} optimizer "
                  f"steps (inf/NaN gradients); this is normal in small numbers")
        return self.history


def _batch_size(batch):
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, dict):
        return _batch_size(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return _batch_size(batch[0])
    return 1


def make_loader(dataset, batch_size, workers, device, sampler=None):
    """DataLoader with the project's settings: no shuffling unless a sampler is given (evaluation is
    deterministic and in file order), pinned memory on CUDA, persistent workers when there are any."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
        pin_memory=torch.device(device).type == "cuda", persistent_workers=workers > 0, drop_last=False)
