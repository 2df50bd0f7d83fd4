"""The training loop shared by all studies: AMP, gradient accumulation, clipping, AdamW with warm-up and
cosine decay, fine-tuning strategies, staged unfreezing, checkpoints and exact resume (bit for bit on the CPU;
on CUDA only with settings.deterministic and where every kernel has a deterministic version:
see precision.configure_kernels).

A study supplies `compute_loss(model, batch) -> (loss, {name: float or scalar tensor})` and, optionally,
`select(model) -> float` (higher is better) to choose the best epoch on a held-out split.
Precision policy lives here and in racecomp.precision, never in models.

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

from racecomp import batches, distributed, encoders, files
from racecomp.errors import InputError
from racecomp.finetune import (FINETUNE_STRATEGIES, apply_unfreeze, check_unfreeze, configure_finetune,
                               parse_unfreeze, set_train_mode)
from racecomp.precision import AMP_CHOICES, amp_context, configure_kernels, make_scaler, resolve_amp
from racecomp.progress import EVERY_SECONDS, format_seconds
from racecomp.rngstate import restore_rng, rng_checkpoint
from racecomp.schedules import SCHEDULES, build_scheduler


class NonFiniteLossError(RuntimeError):
    pass


# ---------------------------------------------------------------- optimizer

OPTIMIZERS = ("adamw", "sgd")
SGD_MOMENTUM = 0.9  # arcface_torch's and QuantFace's


def build_optimizer(model, lr, encoder_lr=None, weight_decay=0.05, extra_modules=(), optimizer="adamw",
                    decay_all=False):
    """AdamW (or SGD with momentum 0.9) over every parameter (frozen ones simply have no gradient and are
    skipped).

    Parameters under `encoder.` get `encoder_lr` (default `lr`), except those the model trains with its decoder
    (`model.trained_as_decoder`, parameter-name prefixes: FastViT's last blocks under --last-blocks decoder).
    1-D parameters (norms, biases, PReLU slopes) get no weight decay unless `decay_all` (the RaceComp source's
    AdamW and arcface_torch's SGD decay every parameter). `extra_modules` (e.g. a margin head) train at `lr`.
    """
    if optimizer not in OPTIMIZERS:
        raise InputError(f"--optimizer {optimizer!r}: must be one of {', '.join(OPTIMIZERS)}")
    as_decoder = tuple(getattr(model, "trained_as_decoder", ()))
    groups = {}
    named = list(model.named_parameters())
    for index, module in enumerate(extra_modules):
        named += [(f"extra{index}.{name}", p) for name, p in module.named_parameters()]
    for name, param in named:
        is_encoder = name.startswith("encoder.") and not name.startswith(as_decoder)
        decay = decay_all or param.ndim > 1
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


# ---------------------------------------------------------------- seeding

def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- settings

@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How the loop trains, checked on construction (ValueError naming the flag); the rest of a Trainer
    (stage prefixes, schedule length) is derived from the model and `steps_per_epoch`."""
    epochs: int = 1             # passes over the loader
    accum_steps: int = 1        # micro-batches per optimizer step
    amp: str = "off"            # one of AMP_CHOICES (auto: resolve_amp picks for the device)
    clip_grad: float = 0.0      # max gradient L2 norm, 0: none
    warmup_steps: int = 0       # optimizer steps of linear warm-up
    finetune: str = "full"      # one of FINETUNE_STRATEGIES
    unfreeze: tuple = ()        # epochs at which the last 1, 2, ... encoder stages open (parse_unfreeze's result)
    log_every: int = 10         # optimizer steps between non-finite checks and progress lines (rank 0 prints
                                # at least one per 10 s), 0: at the epoch's end only
    schedule: str = "cosine"    # one of SCHEDULES (cosine-stages restarts at each epoch of restart_epochs)
    cosine_restarts: tuple = ()  # epochs at which cosine-stages restarts without staged unfreezing
    deterministic: bool = False  # configure_kernels: deterministic kernels instead of cuDNN autotuning
    channels_last: bool = False  # model and 4-D input batches in channels_last memory format (CUDA tensor cores)
    compile: bool = False        # torch.compile the training forward (the loader must drop its last partial batch)

    def __post_init__(self):
        for name in ("unfreeze", "cosine_restarts"):  # a list is accepted, stored as a tuple
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("epochs", "warmup_steps", "log_every"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 0")
        if self.accum_steps < 1:
            raise InputError(f"--accum-steps {self.accum_steps}: must be >= 1")
        if self.amp not in AMP_CHOICES:
            raise InputError(f"--amp {self.amp!r}: must be one of {', '.join(AMP_CHOICES)}")
        if not 0.0 <= self.clip_grad < math.inf:
            raise InputError(f"--clip-grad {self.clip_grad}: must be a finite max norm >= 0 (0: no clipping)")
        if self.finetune not in FINETUNE_STRATEGIES:
            raise InputError(f"--finetune {self.finetune!r}: must be one of {', '.join(FINETUNE_STRATEGIES)}")
        check_unfreeze(self.unfreeze, f"--unfreeze {','.join(map(str, self.unfreeze))}")
        check_unfreeze(self.cosine_restarts, f"--cosine-restarts {','.join(map(str, self.cosine_restarts))}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"--schedule {self.schedule!r}: must be one of {', '.join(SCHEDULES)}")
        if self.schedule == "cosine-stages" and not self.restart_epochs:
            raise InputError("--schedule cosine-stages restarts the cosine at each stage: give --unfreeze (staged "
                             "unfreezing) or --cosine-restarts (stages of the whole model)")
        if self.cosine_restarts and (self.schedule != "cosine-stages" or self.unfreeze):
            raise InputError("--cosine-restarts gives the stages of --schedule cosine-stages without --unfreeze "
                             "(with --unfreeze the cosine restarts at its epochs)")
        if self.unfreeze and self.finetune != "full":
            raise InputError(f"--unfreeze schedules apply to --finetune full only (got --finetune {self.finetune})")

    @property
    def restart_epochs(self):
        """Epochs at which cosine-stages restarts the cosine: --cosine-restarts, else the --unfreeze stages."""
        return self.cosine_restarts or self.unfreeze

    @classmethod
    def from_args(cls, args):
        """From an argparse namespace with cli.add_training_arguments' flags (--unfreeze as text, '1,3')."""
        return cls(epochs=args.epochs, accum_steps=args.accum_steps, amp=args.amp, clip_grad=args.clip_grad,
                   warmup_steps=args.warmup_steps, finetune=args.finetune, unfreeze=parse_unfreeze(args.unfreeze),
                   log_every=args.log_every, schedule=args.schedule,
                   cosine_restarts=parse_unfreeze(args.cosine_restarts, "--cosine-restarts"),
                   deterministic=args.deterministic,
                   channels_last=args.channels_last, compile=args.compile)


# ---------------------------------------------------------------- the loop

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

    The host never waits for the device inside a step, except for the non-finite check every
    settings.log_every optimizer steps (the same steps on every rank), for rank 0's progress lines (those steps,
    and at least every EVERY_SECONDS) and at the end of the epoch: losses and the parts of `compute_loss` (tensors or floats) are summed on the device,
    and a non-finite loss is noted there (its micro-batch) and raised at the next log_every step or the epoch's
    end, before any checkpoint is written. The steps between it and that check still run (a NaN may reach the
    weights), but the last checkpoint on disk is never one written after it. fp16's GradScaler still waits
    once per step for its inf/NaN check (inside GradScaler.step).

    settings.compile compiles the training forward (`compute_loss` receives the compiled module; selection
    and checkpoints use the plain one, so evaluation batch sizes never recompile). It recompiles for each new
    input shape (hence a loader with drop_last, make_loader(drop_last=True)) and after each staged unfreezing
    (the trainable set is part of what it compiled).
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
        self.amp = resolve_amp(settings.amp, self.device)
        configure_kernels(self.device, settings.deterministic)
        if settings.channels_last:
            model.to(memory_format=torch.channels_last)
        self.scaler = make_scaler(device, self.amp)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = settings.epochs * steps_per_epoch
        restarts = tuple(epoch * steps_per_epoch for epoch in settings.restart_epochs)
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
        self.train_model = model  # what compute_loss receives: ddp_model, compiled with settings.compile
        self._ddp_trainable = None  # names of the parameters the current DDP wrapper reduces
        self._optimizer_steps_taken = 0  # optimizer.step() calls: a skipped fp16 step makes none
        optimizer.register_step_post_hook(self._count_optimizer_step)

    def _count_optimizer_step(self, optimizer, args, kwargs):
        self._optimizer_steps_taken += 1

    # -- checkpoints
    def _state(self, rng):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "extra_modules": [m.state_dict() for m in self.extra_modules],
                "amp": self.amp, "epoch": self.epoch, "step": self.step, "skipped_steps": self.skipped_steps,
                "best_score": self.best_score, "best_epoch": self.best_epoch, "history": self.history,
                "rng": rng, "args": self.run_args}

    def checkpoint_path(self, name="checkpoint.pth"):
        return os.path.join(self.out_dir, name)

    def resume(self, path=None):
        """Restore the state of `path` (default: checkpoint.pth); every rank loads the same file. A run resumes
        in the precision it trained in: one that --amp resolves otherwise here (auto on another GPU class) is
        refused, saying what to do."""
        state = files.load_checkpoint(path or self.checkpoint_path())
        # Checkpoints from before "amp" was saved: their args hold the resolved precision.
        trained_in = state.get("amp", state.get("args", {}).get("amp", self.amp))
        if trained_in != self.amp:
            device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else str(self.device)
            raise InputError(
                f"{self.out_dir} trained in {trained_in} but --amp {self.settings.amp} runs {self.amp} on {device}: "
                f"resume it where --amp gives {trained_in} (bf16: compute capability >= 8.0), or pass --overwrite to "
                f"start again; runs that may resume on another GPU class should start with --amp fp16")
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
        restore_rng(state["rng"], self.device, distributed.rank())
        if distributed.is_main():
            print(f"[resume] epoch {self.epoch}, optimizer step {self.step}")

    # -- one optimizer step
    def _optimizer_step(self):
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.settings.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, self.settings.clip_grad)
        taken = self._optimizer_steps_taken
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self._optimizer_steps_taken == taken:
            self.skipped_steps += 1  # the scaler found inf/NaN gradients and skipped this step
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1

    # -- data parallelism
    def _wrap_for_ranks(self):
        """(Re)build the DDP wrapper when there are several processes and the trainable set changed, and
        the compiled module (settings.compile) over it."""
        if distributed.world_size() > 1:
            trainable = tuple(name for name, p in self.model.named_parameters() if p.requires_grad)
            if trainable != self._ddp_trainable:
                device_ids = [self.device] if self.device.type == "cuda" else None
                # Building the wrapper also broadcasts rank 0's parameters and buffers to every rank.
                self.ddp_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
                self._ddp_trainable = trainable
        if not self.settings.compile:
            self.train_model = self.ddp_model
        elif getattr(self.train_model, "_orig_mod", None) is not self.ddp_model:
            self.train_model = torch.compile(self.ddp_model)

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
        first_step = self.step
        seen = 0
        running = {}  # {name: sum over micro-batches, float64 on the device}
        first_bad = torch.tensor(-1, device=self.device)  # index of the first micro-batch with a non-finite loss
        self.optimizer.zero_grad(set_to_none=True)
        for index, batch in enumerate(loader):
            window_start = index // settings.accum_steps * settings.accum_steps
            window = min(settings.accum_steps, n_micro - window_start)
            last_in_window = index + 1 == window_start + window
            batch = batches.to_device(batch, self.device, settings.channels_last)
            with self._gradient_sync(last_in_window):
                with amp_context(self.device, self.amp):
                    loss, parts = self.compute_loss(self.train_model, batch)
                self.scaler.scale(loss / window).backward()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), index, first_bad)
            seen += batches.batch_size(batch)
            for key, value in {"loss": loss, **parts}.items():
                value = value.detach().double() if isinstance(value, torch.Tensor) else value
                running[key] = running.get(key, 0.0) + value
            if last_in_window:
                self._optimizer_step()
                # Checked by step count, the same steps on every rank: a check waits for the device.
                at_log_step = settings.log_every and self.step % settings.log_every == 0
                if at_log_step:
                    self._check_finite(first_bad, first_step)
                # Printed at those steps and at least every EVERY_SECONDS (rank 0 only): slow steps never leave
                # a run silent.
                if distributed.is_main() and settings.log_every and (
                        at_log_step or time.time() - last_line >= EVERY_SECONDS):
                    self._log(index + 1, n_micro, seen, started, running)
                    last_line = time.time()
        self._check_finite(first_bad, first_step)
        distributed.broadcast_buffers(self.model)  # rank 0's BatchNorm statistics everywhere, as saved
        # Every rank runs the same number of equal-size micro-batches (the sampler pads), so the mean of
        # the ranks' means is the mean over all draws.
        per_rank = distributed.all_gather_objects({key: float(value) / max(1, n_micro)
                                                   for key, value in running.items()})
        means = {key: math.fsum(part[key] for part in per_rank) / len(per_rank) for key in per_rank[0]}
        means["images_per_s"] = seen * len(per_rank) / max(1e-9, time.time() - started)
        return means

    def _check_finite(self, first_bad, first_step):
        """Raise NonFiniteLossError naming the first micro-batch of this epoch whose loss was not finite."""
        index = int(first_bad)
        if index < 0:
            return
        step = first_step + index // self.settings.accum_steps
        advice = {"off": "", "bf16": " or use --amp off",
                  "fp16": " or use --amp off (or bf16 on a GPU of compute capability >= 8.0)"}[self.amp]
        raise NonFiniteLossError(
            f"non-finite loss at epoch {self.epoch}, micro-batch {index}, optimizer step {step} (rank "
            f"{distributed.rank()}); stopping. The last good checkpoint is {self.checkpoint_path()} (if it "
            f"exists); lower the learning rate{advice}")

    def _log(self, done, n_micro, seen, started, running):
        elapsed = time.time() - started
        rate = seen / max(1e-9, elapsed)
        eta_epoch = elapsed / done * (n_micro - done)
        remaining_micro = (self.total_steps - self.step) * self.settings.accum_steps
        eta_total = format_seconds(elapsed / done * remaining_micro)
        rate *= distributed.world_size()  # every rank draws as many images as this one
        loss = float(running["loss"]) / done  # this rank's; the epoch summary averages over ranks
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
            rng = rng_checkpoint(self.device)  # on every rank: it gathers each rank's device generator
            if distributed.is_main():
                if self.select is not None and record.get("best"):
                    files.save_checkpoint({"model": self.model.state_dict(), "epoch": self.epoch - 1,
                                           "extra_modules": [m.state_dict() for m in self.extra_modules],
                                           "args": self.run_args}, self.checkpoint_path("best.pth"))
                files.save_checkpoint(self._state(rng), self.checkpoint_path())
                summary = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float))
                print(f"[epoch {record['epoch']}] {summary}; checkpoint saved", flush=True)
            distributed.barrier()  # no rank reads checkpoint.pth / best.pth before rank 0 has written them
        if self.skipped_steps and distributed.is_main():
            print(f"[train] fp16: the gradient scaler skipped {self.skipped_steps} of {self.step} optimizer "
                  f"steps (inf/NaN gradients); this is normal in small numbers")
        return self.history


def make_loader(dataset, batch_size, workers, device, sampler=None, drop_last=False):
    """DataLoader with the project's settings: no shuffling unless a sampler is given (evaluation is
    deterministic and in file order), pinned memory on CUDA, persistent workers when there are any.
    drop_last: leave out the last partial batch (training with --compile: one input shape)."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
        pin_memory=torch.device(device).type == "cuda", persistent_workers=workers > 0, drop_last=drop_last)
