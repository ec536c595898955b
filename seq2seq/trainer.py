"""The training loop: autocast, accumulation, clipping, validation, early stopping, checkpoints,
exact resume, and data-parallel training under torchrun.

One optimizer step = `train.accumulate` batches per process. The gradient is normalised by the
number of target tokens in the whole step (all batches, all processes), so N processes with
accumulation k train exactly like one process with accumulation N * k.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from seq2seq import checkpoint, constants
from seq2seq.batching import Batch
from seq2seq.config import Config, Precision
from seq2seq.constants import PAD_ID
from seq2seq.distributed import Distributed
from seq2seq.early_stopping import EarlyStopping
from seq2seq.ema import WeightAverage
from seq2seq.errors import UserError
from seq2seq.fast.attention_backend import attention_kernels
from seq2seq.horizon import Horizon
from seq2seq.loss import projected_cross_entropy
from seq2seq.metrics_log import MetricsLog
from seq2seq.model import Transformer
from seq2seq.optim import build_optimizer, build_scheduler
from seq2seq.precision import autocast
from seq2seq.tokenizer import Tokenizer
from seq2seq.training_data import TrainingData
from seq2seq.validation import stop_value, validate

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# a scheduler's warning before a time limit (Slurm's --signal; submitit asks for USR2 or USR1)
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


# --------------------------------------------------------------------------- environment


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------- the trainer


@dataclass
class StepStats:
    loss: float  # label-smoothed loss per target token
    nll: float  # negative log-likelihood per target token
    tokens: int  # target tokens (all processes)
    src_tokens: int


def clock() -> float:
    """Seconds on a monotonic clock (training's time budget is measured with it)."""
    return time.monotonic()


class Trainer:
    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        model: Transformer,
        tokenizer: Tokenizer,
        data: TrainingData,
        device: torch.device,
        world: Distributed,
    ) -> None:
        self.cfg, self.run_dir, self.model, self.tokenizer = cfg, run_dir, model, tokenizer
        self.data, self.device, self.world = data, device, world
        self.network = (
            DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
            if world.world_size > 1
            else model
        )
        self.optimizer = build_optimizer(model, cfg.optim)
        self.horizon = Horizon.from_config(cfg.train)  # where the schedule ends
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.model.d_model, self.horizon)
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=cfg.train.precision == Precision.fp16
        )
        self.sampler = data.train.sampler(
            cfg.train.max_tokens, seed=cfg.train.seed, world_size=world.world_size, rank=world.rank
        )
        self.step = 0
        self.elapsed = 0.0  # training seconds in earlier sessions of this run
        self.session_start = clock()  # reset when fit() starts
        self.early_stopping = EarlyStopping()
        self.ema = WeightAverage(model, cfg.train.ema) if cfg.train.ema else None
        self.stop_reason = ""
        self.last_saved_step = -1
        self.interrupted = False  # set by Ctrl-C / SIGTERM, honoured at the next step boundary
        self.stop_signal: int | None = None  # the signal that set it
        self.previous_handlers: dict = {}  # the handlers training replaced (stop_on_signals)
        self.metrics = MetricsLog(run_dir, enabled=world.is_main)

    # ------------------------------------------------------------------ state

    def train_state(self) -> dict:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "horizon": self.horizon.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": self.rng_states(),  # one per process
            **self.early_stopping.state_dict(),  # "best", "bad_validations"
            "elapsed_seconds": self.elapsed_now(),
            **({"ema": self.ema.state_dict()} if self.ema else {}),
        }

    def load_train_state(self, state: dict) -> None:
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "horizon" in state:
            self.horizon.load_state_dict(state["horizon"])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"][self.world.rank], self.device)
        self.early_stopping.load_state_dict(state)
        self.elapsed = float(state["elapsed_seconds"])
        if self.ema and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.last_saved_step = self.step

    def rng_states(self) -> list[dict]:
        """Every process's RNG state (a collective call under DDP)."""
        if self.world.world_size == 1:
            return [rng_state(self.device)]
        states: list = [None] * self.world.world_size
        dist.all_gather_object(states, rng_state(self.device))
        return states

    def elapsed_now(self) -> float:
        """Seconds of training in this run: what train.max_minutes counts."""
        return self.elapsed + (clock() - self.session_start)

    # ------------------------------------------------------------------ batches

    def batch_stream(self) -> Iterator[Batch]:
        """Training batches across epochs, until train.max_epochs."""
        while True:
            yield from self.data.train.batches(self.sampler)
            if self.cfg.train.max_epochs and self.sampler.epoch >= self.cfg.train.max_epochs:
                return

    # ------------------------------------------------------------------ one step

    def train_step(self, batches: list[Batch]) -> StepStats:
        self.network.train()
        # summed over the batches on the device, so reading them costs one synchronisation
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        nll = torch.zeros((), dtype=torch.float64, device=self.device)
        tgt_tokens = src_tokens = 0
        for i, batch in enumerate(batches):
            batch = batch.to(self.device, non_blocking=True)
            last = i == len(batches) - 1
            no_sync = (
                cast(DistributedDataParallel, self.network).no_sync()
                if self.world.world_size > 1 and not last
                else contextlib.nullcontext()
            )
            with no_sync:
                with (
                    autocast(self.cfg.train.precision, self.device),
                    attention_kernels(self.device),
                ):
                    hidden = self.network(
                        batch.src, batch.src_pad_mask, batch.tgt_in, project=False
                    )
                    out = projected_cross_entropy(
                        hidden,
                        self.model.output_projection.weight,
                        batch.tgt_out,
                        self.cfg.train.label_smoothing,
                        PAD_ID,
                    )
                self.scaler.scale(out.loss).backward()
            loss += out.loss.detach()
            nll += out.nll.detach()
            tgt_tokens += batch.tgt_tokens
            src_tokens += batch.src_tokens
        # every process must stop at the same step: interrupts and time limits are shared too
        step = self.summed_over_processes(
            loss=loss,
            nll=nll,
            tgt_tokens=tgt_tokens,
            src_tokens=src_tokens,
            interrupted=self.interrupted,
            out_of_time=self.out_of_time(),
            elapsed=self.elapsed_now(),
        )
        self.horizon.observe(self.step + 1, step["elapsed"] / self.world.world_size)
        self.apply_gradients(step["tgt_tokens"])
        if step["interrupted"]:
            self.interrupted, self.stop_reason = True, "interrupted"
        elif step["out_of_time"]:
            self.stop_reason = f"reached train.max_minutes={self.cfg.train.max_minutes}"
        tokens = step["tgt_tokens"]
        return StepStats(
            step["loss"] / tokens, step["nll"] / tokens, int(tokens), int(step["src_tokens"])
        )

    def summed_over_processes(self, **values: torch.Tensor | float) -> dict[str, float]:
        """Named numbers summed over every process in one all-reduce (one synchronisation)."""
        stacked = torch.stack(
            [torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in values.values()]
        )
        if self.world.world_size > 1:
            dist.all_reduce(stacked)
        return dict(zip(values, stacked.tolist(), strict=True))

    def apply_gradients(self, tokens: float) -> None:
        """Normalise by the step's target tokens, clip, step the optimizer and the schedule."""
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        # DDP averaged the gradients over processes; the loss is a sum over tokens.
        torch._foreach_mul_(grads, self.world.world_size / max(tokens, 1.0))
        if self.cfg.train.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_norm)
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scaler.get_scale() >= scale:  # fp16: a skipped step (inf/NaN) is not counted
            self.scheduler.step()
            if self.ema:
                self.ema.update()
        self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ checkpoints, logs

    def save(self, is_best: bool = False) -> None:
        state = self.train_state()  # every process takes part (RNG states are gathered)
        failure = ""
        if self.world.is_main:
            try:
                with self.weights_for_use():
                    saved = checkpoint.save_checkpoint(
                        self.run_dir, self.step, self.model, state, self.cfg.train.keep_last
                    )
                if is_best or not (self.run_dir / constants.BEST_WEIGHTS).exists():
                    checkpoint.mark_best(self.run_dir, saved)
            except OSError as error:
                failure = self.save_failure(error)
        if self.world.world_size > 1:  # every process stops, not only rank 0
            flag = torch.tensor([1.0 if failure else 0.0], device=self.device)
            dist.broadcast(flag, src=0)
            if flag.item() and not failure:
                failure = "rank 0 could not save a checkpoint (its error says why)"
        if failure:
            raise UserError(failure)
        self.last_saved_step = self.step

    def weights_for_use(self) -> contextlib.AbstractContextManager:
        """The weights validations score and checkpoints hold: the moving average with
        train.ema, else the model's own."""
        return self.ema.swapped_in() if self.ema else contextlib.nullcontext()

    def save_failure(self, error: OSError) -> str:
        """One line: what failed, what is still intact, how to go on."""
        latest = checkpoint.latest_checkpoint(self.run_dir)
        written = latest is not None and latest == checkpoint.step_dir(self.run_dir, self.step)
        if written:  # the step directory is complete; a later file operation failed
            what = f"cannot update the top-level files of {self.run_dir} after step {self.step}"
            intact = f"the checkpoint of step {self.step} is complete"
        else:
            what = f"cannot save the checkpoint of step {self.step} in {self.run_dir}"
            intact = (
                f"the checkpoint of step {checkpoint.step_of(latest)} is intact"
                if latest is not None
                else "no earlier checkpoint exists"
            )
        return (
            f"{what}: {error.strerror or error}; {intact}. Free space or fix permissions, then "
            f"resume with: seq2seq-train run_dir={self.run_dir}"
        )

    # ------------------------------------------------------------------ the loop

    def out_of_time(self) -> bool:
        minutes = self.cfg.train.max_minutes
        return bool(minutes) and self.elapsed_now() >= 60 * minutes

    def should_stop(self) -> bool:
        """Checked before each step; interrupts and time limits are agreed in train_step."""
        train = self.cfg.train
        if train.max_steps and self.step >= train.max_steps:
            self.stop_reason = f"reached train.max_steps={train.max_steps}"
        elif self.early_stopping.out_of_patience(train.patience):  # also right after a resume
            self.stop_reason = f"no improvement in {train.patience} validations"
        elif train.max_minutes and self.elapsed >= 60 * train.max_minutes:  # on resume
            self.stop_reason = f"reached train.max_minutes={train.max_minutes}"
        elif self.horizon.reached(self.step):
            self.stop_reason = f"the schedule fitted to train.max_minutes={train.max_minutes} ended"
        return bool(self.stop_reason)

    def fit(self) -> None:
        """Train until a limit is reached. Ctrl-C, SIGTERM, SIGUSR1 or SIGUSR2 stop at the next
        step boundary with a checkpoint (a second Ctrl-C aborts at once)."""
        self.session_start = clock()
        batches = self.batch_stream()
        progress = tqdm(
            total=self.cfg.train.max_steps or None,
            initial=self.step,
            unit="step",
            disable=None if self.world.is_main else True,  # None: shown on a terminal only
            dynamic_ncols=True,
            leave=False,
        )
        window = {"tokens": 0, "start": clock(), "step": self.step}
        with self.stop_on_signals():
            while not self.should_stop():
                step_batches = list(itertools.islice(batches, self.cfg.train.accumulate))
                if not step_batches:
                    self.stop_reason = f"reached train.max_epochs={self.cfg.train.max_epochs}"
                    break
                stats = self.train_step(step_batches)
                self.step += 1
                progress.update()
                window["tokens"] += stats.tokens + stats.src_tokens
                if self.step % self.cfg.train.log_every == 0:
                    self.log_training(stats, window, progress)
                if self.step % self.cfg.train.validate_every == 0:
                    self.validate_and_save()
        progress.close()
        if self.interrupted:
            if self.step != self.last_saved_step:
                self.save()
            self.hand_over_requeue()
            raise UserError(
                f"interrupted at step {self.step}; checkpoint saved. Resume with: "
                f"seq2seq-train run_dir={self.run_dir}"
            )
        if self.step != self.last_saved_step:
            self.validate_and_save()
        if self.cfg.train.average_last and self.world.is_main:
            self.validate_average(self.cfg.train.average_last)
        log.info(
            "stopped: %s at step %d; best validation at step %d",
            self.stop_reason,
            self.step,
            self.early_stopping.best_step,
        )

    @contextlib.contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """Ctrl-C, SIGTERM, SIGUSR1 and SIGUSR2 (a cluster's warning before its time limit)
        stop training at the end of the step; a second one aborts at once."""

        stops: list[int] = []  # Ctrl-C and SIGTERM received

        def request_stop(signum, frame) -> None:
            if signum in REQUEUE_SIGNALS:  # with or without a SIGTERM: a pre-empted job gets both
                self.stop_signal = signum  # handed on to the launcher once the checkpoint is saved
            elif stops:  # the second Ctrl-C or SIGTERM: stop now
                raise KeyboardInterrupt
            else:
                stops.append(signum)
                self.stop_signal = self.stop_signal or signum
            if not self.interrupted:
                log.warning("stopping after this step (interrupt again to abort without saving)")
            self.interrupted = True  # shared with every process at the end of this step

        self.previous_handlers = {
            sig: signal.signal(sig, request_stop) for sig in (*STOP_SIGNALS, *REQUEUE_SIGNALS)
        }
        try:
            yield
        finally:
            for sig, handler in self.previous_handlers.items():
                signal.signal(sig, handler)

    def hand_over_requeue(self) -> None:
        """After the checkpoint is saved: a SIGUSR1 or SIGUSR2 goes on to the handler that was
        there before training, when there was one: a job launcher's (submitit's requeues the
        job, which then resumes the run)."""
        handler = self.previous_handlers.get(self.stop_signal)
        if self.stop_signal in REQUEUE_SIGNALS and callable(handler):
            log.info("handing the signal on to the job's launcher to requeue it")
            handler(self.stop_signal, None)

    def log_training(self, stats: StepStats, window: dict, progress: tqdm) -> None:
        seconds = clock() - window["start"]
        record = {
            "step": self.step,
            "epoch": self.sampler.epoch,
            "loss": round(stats.loss, 4),
            "nll": round(stats.nll, 4),
            "lr": self.scheduler.get_last_lr()[0],
            "tokens_per_s": round(window["tokens"] / max(seconds, 1e-9)),
            "elapsed_s": round(self.elapsed_now(), 1),
        }
        left = self.seconds_left(seconds / max(self.step - window["step"], 1))
        eta = "?" if left is None else str(datetime.timedelta(seconds=round(left)))
        progress.set_postfix(
            loss=record["loss"], lr=f"{record['lr']:.2e}", tok_s=record["tokens_per_s"], eta=eta
        )
        log.info(
            "step %(step)d  loss %(loss).3f  nll %(nll).3f  lr %(lr).2e  %(tokens_per_s)d tok/s"
            "  eta %(eta)s",
            {**record, "eta": eta},
        )
        self.metrics.write({"kind": "train", **record})
        window.update(tokens=0, start=clock(), step=self.step)
        if self.horizon.fitted_to_time:
            progress.total = self.horizon.steps

    def seconds_left(self, seconds_per_step: float) -> float | None:
        """Until train.max_steps or train.max_minutes stops training, whichever comes first
        (None without either limit)."""
        train, limits = self.cfg.train, []
        if train.max_steps:
            limits.append((train.max_steps - self.step) * seconds_per_step)
        if train.max_minutes:
            limits.append(60 * train.max_minutes - self.elapsed_now())
        return max(min(limits), 0.0) if limits else None

    def validate_and_save(self) -> None:
        is_best = False
        if self.world.is_main:
            with self.weights_for_use():
                result = validate(self.model, self.data, self.tokenizer, self.cfg, self.device)
            is_best = self.early_stopping.record(
                stop_value(result, self.cfg.train.stop_metric), self.step
            )
            record = {
                "kind": "valid",
                "step": self.step,
                **result,
                "elapsed_s": round(self.elapsed_now(), 1),
            }
            log.info(
                "validation at step %d: %s%s",
                self.step,
                "  ".join(f"{k} {v}" for k, v in result.items()),
                "  (best)" if is_best else "",
            )
            self.metrics.write(record)
        self.save(is_best)
        self.share_validation_outcome()

    def validate_average(self, last: int) -> None:
        """The last `last` checkpoints averaged into the run's averaged weights and validated;
        they become the best weights when they validate better than every checkpoint."""
        done = checkpoint.average_last(self.run_dir, last)
        averaged = self.run_dir / constants.AVERAGE_WEIGHTS
        trained = {name: tensor.clone() for name, tensor in self.model.state_dict().items()}
        checkpoint.load_weights(self.model, averaged)
        result = validate(self.model, self.data, self.tokenizer, self.cfg, self.device)
        self.model.load_state_dict(trained)
        best = self.early_stopping.best_value
        is_best = best is None or stop_value(result, self.cfg.train.stop_metric) > best
        if is_best:
            checkpoint.link_or_copy(averaged, self.run_dir / constants.BEST_WEIGHTS)
        log.info(
            "%s; validation: %s%s",
            done,
            "  ".join(f"{k} {v}" for k, v in result.items()),
            "  (best: now the run's best weights)" if is_best else "",
        )
        checkpoints = min(last, len(checkpoint.step_dirs(self.run_dir)))
        self.metrics.write(
            {"kind": "valid_average", "step": self.step, "checkpoints": checkpoints, **result}
        )

    def share_validation_outcome(self) -> None:
        """Rank 0 validates; every process takes its early-stopping decision and best step."""
        if self.world.world_size == 1:
            return
        shared = [self.early_stopping.state_dict()]
        dist.broadcast_object_list(shared, src=0)
        self.early_stopping.load_state_dict(shared[0])
