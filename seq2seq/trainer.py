"""The training loop: autocast, accumulation, clipping, validation, early stopping, checkpoints,
exact resume, and data-parallel training under torchrun.

One optimizer step = `train.accumulate` batches per process. The gradient is normalised by the
number of target tokens in the whole step (all batches, all processes), so N processes with
accumulation k train exactly like one process with accumulation N * k.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import json
import logging
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from seq2seq import checkpoint
from seq2seq.batching import Batch, EncodedSplit
from seq2seq.config import Config, DecodeConfig, Precision, SearchStrategy, StopMetric
from seq2seq.constants import PAD_ID
from seq2seq.data import clean_training_rows, encode_split, iter_texts, load_split
from seq2seq.errors import ConfigError, UserError
from seq2seq.loss import projected_cross_entropy
from seq2seq.metrics import corpus_scores
from seq2seq.model import Transformer, count_parameters
from seq2seq.optim import build_optimizer, build_scheduler
from seq2seq.tokenizer import Tokenizer
from seq2seq.translate import translate_encoded

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- environment


@dataclass
class Distributed:
    """This process's place among the torchrun workers (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Distributed:
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    return device


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == Precision.fp32:
        return contextlib.nullcontext()
    if precision == Precision.fp16 and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs a CUDA device; on CPU use bf16")
    dtype = torch.bfloat16 if precision == Precision.bf16 else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def attention_kernels(device: torch.device) -> contextlib.AbstractContextManager:
    """On CPU, plain matmul + softmax attention trains faster than the fused flash kernel for
    sentence-length sequences (its backward dominated the step: 8.9k vs 7.2k tokens/s with
    bf16 on the small model, 2 threads). GPUs keep PyTorch's choice."""
    if device.type == "cpu":
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def forget_metrics_after(path: Path, step: int) -> None:
    """Drop log records of steps after `step`: a killed session's, about to be redone."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text("".join(kept))
        os.replace(temporary, path)


def tensorboard_writer(run_dir: Path):
    """A SummaryWriter into run_dir/tensorboard, or None without the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed: metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    train: EncodedSplit  # the rows kept by cleaning
    valid: EncodedSplit  # every row, corpus order
    valid_references: list[str]


def prepare_tokenizer(cfg: Config, run_dir: Path, train_text: datasets.Dataset) -> Tokenizer:
    """The run's tokenizer: loaded (and verified) if the run has one, else trained and saved."""
    if (run_dir / "tokenizer.json").is_file():
        return Tokenizer.load(run_dir)
    log.info(
        "training SentencePiece (%s, %d pieces) on %d pairs",
        cfg.tokenizer.model_type.value,
        cfg.tokenizer.vocab_size,
        len(train_text),
    )
    texts = {"src": iter_texts(train_text, "src"), "tgt": iter_texts(train_text, "tgt")}
    return Tokenizer.train(cfg.tokenizer, texts, run_dir)


def prepare_data(cfg: Config, run_dir: Path) -> tuple[Tokenizer, TrainingData]:
    train_text = load_split(cfg.data, "train")
    valid_text = load_split(cfg.data, "valid")
    tokenizer = prepare_tokenizer(cfg, run_dir, train_text)
    train = encode_split(train_text, tokenizer, cfg.data.num_proc)
    train_split = EncodedSplit.from_dataset(train, clean_training_rows(train, cfg.data))
    valid = EncodedSplit.from_dataset(
        encode_split(valid_text, tokenizer, cfg.data.num_proc),
        max_length=cfg.model.max_positions - 1,
    )
    return tokenizer, TrainingData(train_split, valid, list(valid_text["tgt"]))


def fit_vocabulary(cfg: Config, tokenizer: Tokenizer) -> None:
    """The model's vocabulary sizes are the tokenizer's."""
    cfg.model.src_vocab_size = tokenizer.vocab_size("src")
    cfg.model.tgt_vocab_size = tokenizer.vocab_size("tgt")
    cfg.model.validate()
    if cfg.data.max_length + 1 > cfg.model.max_positions:
        raise ConfigError(
            f"data.max_length ({cfg.data.max_length}) + 1 must not exceed "
            f"model.max_positions ({cfg.model.max_positions})"
        )


# --------------------------------------------------------------------------- the trainer


@dataclass
class StepStats:
    loss: float  # label-smoothed loss per target token
    nll: float  # negative log-likelihood per target token
    tokens: int  # target tokens (all processes)
    src_tokens: int


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
        self.scheduler = build_scheduler(
            self.optimizer, cfg.optim, cfg.model.d_model, cfg.train.max_steps
        )
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=cfg.train.precision == Precision.fp16
        )
        self.sampler = data.train.sampler(
            cfg.train.max_tokens, seed=cfg.train.seed, world_size=world.world_size, rank=world.rank
        )
        self.step = 0
        self.elapsed = 0.0  # training seconds in earlier sessions of this run
        self.best: dict = {"value": None, "step": 0}
        self.bad_validations = 0
        self.stop_reason = ""
        self.last_saved_step = -1
        self.interrupted = False  # set by Ctrl-C / SIGTERM, honoured at the next step boundary
        self.tensorboard = tensorboard_writer(run_dir) if world.is_main else None

    # ------------------------------------------------------------------ state

    def train_state(self) -> dict:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": self.rng_states(),  # one per process
            "best": dict(self.best),
            "bad_validations": self.bad_validations,
            "elapsed_seconds": self.elapsed_now(),
        }

    def load_train_state(self, state: dict) -> None:
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"][self.world.rank], self.device)
        self.best = dict(state["best"])
        self.bad_validations = int(state["bad_validations"])
        self.elapsed = float(state["elapsed_seconds"])
        self.last_saved_step = self.step
        if self.world.is_main:
            forget_metrics_after(self.run_dir / "metrics.jsonl", self.step)

    def rng_states(self) -> list[dict]:
        """Every process's RNG state (a collective call under DDP)."""
        if self.world.world_size == 1:
            return [rng_state(self.device)]
        states: list = [None] * self.world.world_size
        dist.all_gather_object(states, rng_state(self.device))
        return states

    def elapsed_now(self) -> float:
        return self.elapsed + (time.monotonic() - self.session_start)

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
        # loss, nll, target tokens, source tokens; on the device, so NCCL can all-reduce it and
        # reading it costs one synchronisation per step
        totals = torch.zeros(6, dtype=torch.float64, device=self.device)
        for i, batch in enumerate(batches):
            batch = batch.to(self.device, non_blocking=True)
            last = i == len(batches) - 1
            no_sync = (
                self.network.no_sync()
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
            totals[0] += out.loss.detach()
            totals[1] += out.nll.detach()
            totals[2] += batch.tgt_tokens
            totals[3] += batch.src_tokens
        # every process must stop at the same step: share interrupts and time limits
        totals[4] = float(self.interrupted)
        totals[5] = float(self.out_of_time())
        if self.world.world_size > 1:
            dist.all_reduce(totals)
        loss, nll, tokens, src_tokens, interrupted, out_of_time = totals.tolist()
        self.apply_gradients(tokens)
        if interrupted:
            self.interrupted, self.stop_reason = True, "interrupted"
        elif out_of_time:
            self.stop_reason = f"reached train.max_minutes={self.cfg.train.max_minutes}"
        return StepStats(loss / tokens, nll / tokens, int(tokens), int(src_tokens))

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
        self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> dict:
        self.model.eval()
        totals = torch.zeros(2, dtype=torch.float64)  # nll, tokens
        with autocast(self.cfg.train.precision, self.device):
            for batch in self.valid_batches():
                batch = batch.to(self.device)
                hidden = self.model(batch.src, batch.src_pad_mask, batch.tgt_in, project=False)
                weight = self.model.output_projection.weight
                out = projected_cross_entropy(hidden, weight, batch.tgt_out, 0.0, PAD_ID)
                totals += torch.tensor([out.nll.item(), out.tokens.item()], dtype=torch.float64)
            nll = float(totals[0] / totals[1])
            result = {"valid_nll": round(nll, 4), "valid_ppl": round(math.exp(nll), 2)}
            if self.cfg.train.valid_bleu:
                hypotheses = translate_encoded(
                    self.model, self.data.valid, self.tokenizer, self.valid_decoding(), self.device
                )
                scores = corpus_scores(hypotheses, self.data.valid_references)
                result.update(bleu=scores["bleu"].score, chrf=scores["chrf"].score)
        return result

    def valid_decoding(self) -> DecodeConfig:
        """decode.* with the validation beam: greedy unless train.valid_beam > 1."""
        beam = self.cfg.train.valid_beam
        strategy = SearchStrategy.beam if beam > 1 else SearchStrategy.greedy
        return dataclasses.replace(self.cfg.decode, strategy=strategy, beam=beam, nbest=1)

    def valid_batches(self) -> Iterator[Batch]:
        valid = self.data.valid
        return valid.batches(valid.sampler(self.cfg.train.max_tokens, shuffle=False))

    def metric_of(self, result: dict) -> float:
        if self.cfg.train.stop_metric == StopMetric.bleu and "bleu" in result:
            return result["bleu"]
        return -result["valid_nll"]  # higher is better

    def record_validation(self, result: dict) -> bool:
        """Update best/patience; True when this validation is the best so far."""
        value = self.metric_of(result)
        improved = self.best["value"] is None or value > self.best["value"]
        if improved:
            self.best = {"value": value, "step": self.step}
            self.bad_validations = 0
        else:
            self.bad_validations += 1
            patience = self.cfg.train.patience
            if patience and self.bad_validations >= patience:
                self.stop_reason = f"no improvement in {patience} validations"
        return improved

    # ------------------------------------------------------------------ checkpoints, logs

    def save(self, is_best: bool = False) -> None:
        state = self.train_state()  # every process takes part (RNG states are gathered)
        failure = ""
        if self.world.is_main:
            try:
                saved = checkpoint.save_checkpoint(
                    self.run_dir, self.step, self.model, state, self.cfg.train.keep_last
                )
                if is_best or not (self.run_dir / checkpoint.BEST_WEIGHTS).exists():
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
                f"the checkpoint of step {int(latest.name.split('_')[1])} is intact"
                if latest is not None
                else "no earlier checkpoint exists"
            )
        return (
            f"{what}: {error.strerror or error}; {intact}. Free space or fix permissions, then "
            f"resume with: seq2seq-train run_dir={self.run_dir}"
        )

    def write_metrics(self, record: dict) -> None:
        """One JSON line in metrics.jsonl, and TensorBoard scalars when it is installed."""
        if not self.world.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "step":
                    self.tensorboard.add_scalar(f"{record['kind']}/{key}", value, record["step"])
            self.tensorboard.flush()

    # ------------------------------------------------------------------ the loop

    def out_of_time(self) -> bool:
        minutes = self.cfg.train.max_minutes
        return bool(minutes) and self.elapsed_now() >= 60 * minutes

    def should_stop(self) -> bool:
        """Checked before each step; interrupts and time limits are agreed in train_step."""
        train = self.cfg.train
        if train.max_steps and self.step >= train.max_steps:
            self.stop_reason = f"reached train.max_steps={train.max_steps}"
        elif train.max_minutes and self.elapsed >= 60 * train.max_minutes:  # on resume
            self.stop_reason = f"reached train.max_minutes={train.max_minutes}"
        return bool(self.stop_reason)

    def fit(self) -> None:
        """Train until a limit is reached. Ctrl-C or SIGTERM stop at the next step boundary
        with a checkpoint (a second Ctrl-C aborts at once)."""
        self.session_start = time.monotonic()
        batches = self.batch_stream()
        progress = tqdm(
            total=self.cfg.train.max_steps or None,
            initial=self.step,
            unit="step",
            disable=None if self.world.is_main else True,  # None: shown on a terminal only
            dynamic_ncols=True,
            leave=False,
        )
        window = {"tokens": 0, "start": time.monotonic(), "step": self.step}
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
            raise UserError(
                f"interrupted at step {self.step}; checkpoint saved. Resume with: "
                f"seq2seq-train run_dir={self.run_dir}"
            )
        if self.step != self.last_saved_step:
            self.validate_and_save()
        log.info(
            "stopped: %s at step %d; best validation at step %d",
            self.stop_reason,
            self.step,
            self.best["step"],
        )

    @contextlib.contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        def request_stop(signum, frame) -> None:
            if self.interrupted:  # the second time: stop now
                raise KeyboardInterrupt
            self.interrupted = True  # shared with every process at the end of this step
            log.warning("stopping after this step (interrupt again to abort without saving)")

        previous = {
            sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def log_training(self, stats: StepStats, window: dict, progress: tqdm) -> None:
        seconds = time.monotonic() - window["start"]
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
        self.write_metrics({"kind": "train", **record})
        window.update(tokens=0, start=time.monotonic(), step=self.step)

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
            result = self.validate()
            is_best = self.record_validation(result)
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
            self.write_metrics(record)
        self.save(is_best)
        self.share_stop_decision()

    def share_stop_decision(self) -> None:
        """Rank 0 validates; every process must agree on early stopping."""
        if self.world.world_size == 1:
            return
        flag = torch.tensor([1.0 if self.stop_reason else 0.0], device=self.device)
        dist.broadcast(flag, src=0)
        if flag.item() and not self.stop_reason:
            self.stop_reason = "early stopping (rank 0)"


# --------------------------------------------------------------------------- entry point


def save_config(cfg: Config, run_dir: Path) -> None:
    path = run_dir / "config.yaml"
    temporary = path.with_name(".config.yaml.tmp")
    temporary.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    os.replace(temporary, path)


def setup_distributed(world: Distributed, device: torch.device) -> None:
    if world.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, rank=world.rank, world_size=world.world_size)


def train(cfg: Config, run_dir: Path, choices: dict[str, str] | None = None) -> Trainer:
    """Train (or resume) the run in `run_dir`; returns the finished trainer.

    `choices`: the config groups the command selected (recipe, model), kept in meta.json so that
    rerunning the same command resumes the run.
    """
    world = Distributed.from_environment()
    device = resolve_device(cfg.train.device, world.local_rank)
    setup_distributed(world, device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    if world.is_main:
        tokenizer, data = prepare_data(cfg, run_dir)
    if world.world_size > 1:
        dist.barrier()  # rank 0 trained the tokenizer and filled the encoding cache
        if not world.is_main:
            tokenizer, data = prepare_data(cfg, run_dir)
    latest = checkpoint.latest_checkpoint(run_dir)
    if latest is not None:  # resuming: the saved model's vocabularies must be the tokenizer's
        tokenizer.check_fits(cfg.model)
    fit_vocabulary(cfg, tokenizer)
    torch.manual_seed(cfg.train.seed)
    model = Transformer(cfg.model).to(device)  # the same initial weights in every process
    torch.manual_seed(cfg.train.seed + world.rank)  # each process its own dropout stream
    trainer = Trainer(cfg, run_dir, model, tokenizer, data, device, world)
    if latest is not None:
        checkpoint.load_weights(model, latest / checkpoint.WEIGHTS)
        trainer.load_train_state(checkpoint.load_train_state(latest / checkpoint.TRAIN_STATE))
        log.info("resuming from %s (step %d)", latest, trainer.step)
    elif world.is_main:
        checkpoint.write_meta(run_dir, tokenizer.sha256(), choices or {})
        log.info(
            "model: %s parameters; %d training pairs, %d batches per epoch per process",
            f"{count_parameters(model):,}",
            len(data.train),
            len(trainer.sampler),
        )
    if world.is_main:
        save_config(cfg, run_dir)  # also records overrides given when resuming
    trainer.fit()
    return trainer
