"""Console entry points.

`seq2seq-train` and `seq2seq-info` compose the Hydra config in `conf/` (recipes in `recipes/`);
`seq2seq-average` works on a run directory with `key=value` arguments. Mistakes in the command
line are reported in one line with exit status 2, never with a traceback.
"""

from __future__ import annotations

import difflib
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from datetime import datetime
from pathlib import Path

import hydra
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from seq2seq.config import Config, register_configs
from seq2seq.errors import UserError

CONFIG_MODULE = "seq2seq.conf"
log = logging.getLogger("seq2seq")


# --------------------------------------------------------------------------- config errors


def schema_keys(node: type, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass schema (`model.d_model`, `train.max_steps`, ...)."""
    keys = []
    for f in fields(node):
        key = f"{prefix}{f.name}"
        keys.append(key)
        default = f.default_factory() if callable(f.default_factory) else None
        if is_dataclass(default):
            keys += schema_keys(type(default), f"{key}.")
    return keys


def closest_keys(key: str) -> str:
    known = schema_keys(Config)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if not close:  # compare the last part only: `model.dmodel` vs `d_model`
        last = key.rsplit(".", 1)[-1]
        close = [
            k for k in known if difflib.get_close_matches(last, [k.rsplit(".", 1)[-1]], cutoff=0.7)
        ][:3]
    return f"; did you mean {' or '.join(close)}?" if close else ""


def explain_config_error(error: Exception) -> str:
    """One line for a Hydra/OmegaConf composition error."""
    text = str(error)
    cause = error.__cause__ or error
    cause_text = str(cause)
    missing_group = re.search(r"Could not find '(\w+)/([^']+)'", text)
    if missing_group:
        group, name = missing_group.groups()
        options = re.search(r"Available options in '\w+':\n((?:\t.*\n?)+)", text)
        names = options.group(1).splitlines() if options else []
        available = ", ".join(n.strip() for n in names if n.strip() != "schema")
        return f"unknown {group} '{name}'" + (f"; available: {available}" if available else "")
    unknown_key = re.search(r"Key '([^']+)' not in '\w+'", cause_text)
    if unknown_key:
        full_key = re.search(r"full_key: (\S+)", cause_text)
        key = full_key.group(1) if full_key else unknown_key.group(1)
        return f"unknown config key '{key}'{closest_keys(key)}"
    override = re.search(r"override (\S+)", text)
    first_line = cause_text.strip().splitlines()[0] if cause_text.strip() else text
    where = f"{override.group(1)}: " if override else ""
    return f"invalid config value {where}{first_line}".replace("  ", " ")


def check_overrides(overrides: list[str]) -> None:
    """Compose once before Hydra runs the job, to turn config mistakes into one-line errors."""
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        OmegaConf.to_object(cfg)  # runs every dataclass validation
    except UserError:
        raise
    except Exception as error:  # Hydra and OmegaConf raise many types; all are config mistakes
        raise UserError(explain_config_error(error)) from None
    finally:
        GlobalHydra.instance().clear()


def command_line_overrides(argv: list[str]) -> list[str] | None:
    """The key=value overrides, or None when Hydra flags (--cfg, --help, -m) are present."""
    if any(arg.startswith("-") for arg in argv):
        return None
    return list(argv)


# --------------------------------------------------------------------------- running jobs


def setup_logging(run_dir: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)


def exit_on_user_error(job: Callable[[], None]) -> None:
    try:
        job()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def to_config(cfg: DictConfig) -> Config:
    """The composed DictConfig as validated dataclasses (runs every `validate()`)."""
    return OmegaConf.to_object(cfg)


def hydra_command(job: Callable[[DictConfig], None]) -> Callable[[], None]:
    """A console script: check the overrides, then let Hydra compose and run `job`."""

    def run_job(cfg: DictConfig) -> None:
        exit_on_user_error(lambda: job(cfg))

    run_job.__doc__ = job.__doc__
    hydra_main = hydra.main(
        version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config"
    )(run_job)

    def main() -> None:
        register_configs()
        overrides = command_line_overrides(sys.argv[1:])
        if overrides is not None:
            exit_on_user_error(lambda: check_overrides(overrides))
        hydra_main()

    return main


# --------------------------------------------------------------------------- seq2seq-info


def info_job(cfg: DictConfig) -> None:
    """Build the configured model and print its architecture summary and parameter count."""
    from seq2seq.model import Transformer, count_parameters

    m = to_config(cfg).model
    model = Transformer(m)
    print(
        f"Transformer {m.encoder_layers}+{m.decoder_layers} layers, d_model {m.d_model}, "
        f"{m.heads} heads, ffn {m.ffn_dim}, {m.norm.value}-norm, {m.positions.value} positions, "
        f"vocab {m.src_vocab_size}/{m.tgt_vocab_size}, tied embeddings: {m.tie_embeddings.value}"
    )
    print(f"parameters: {count_parameters(model):,}")


info = hydra_command(info_job)


# --------------------------------------------------------------------------- seq2seq-train


def default_run_dir() -> Path:
    recipe = HydraConfig.get().runtime.choices.get("recipe") or "custom"
    return Path("runs") / recipe / datetime.now().strftime("%Y%m%d-%H%M%S")


def resume_config(run_dir: Path, overrides: list[str]) -> Config:
    """The run's saved config, with the command line's key=value overrides applied on top."""
    groups = {"model", "data", "tokenizer", "optim", "train", "decode", "recipe"}
    changes = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in groups:
            raise UserError(
                f"cannot change '{key}' when resuming {run_dir}; only key=value "
                "overrides such as train.max_steps=... apply to an existing run"
            )
        if key != "run_dir":
            changes.append(override)
    saved = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(run_dir / "config.yaml"))
    try:
        return OmegaConf.to_object(OmegaConf.merge(saved, OmegaConf.from_dotlist(changes)))
    except Exception as error:
        raise UserError(explain_config_error(error)) from None


def train_job(cfg: DictConfig) -> None:
    """Train a model from a recipe; `run_dir=<existing run>` resumes it."""
    from seq2seq.evaluate import evaluate_split
    from seq2seq.trainer import train

    config = to_config(cfg)
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir()
    if (run_dir / "config.yaml").is_file():
        config = resume_config(run_dir, list(HydraConfig.get().overrides.task))
    config.run_dir = str(run_dir)
    setup_logging(run_dir)
    log.info("run directory: %s", run_dir)
    trainer = train(config, run_dir)
    if trainer.world.is_main and config.train.test_at_end:
        from seq2seq import checkpoint

        checkpoint.load_weights(trainer.model, run_dir / checkpoint.BEST_WEIGHTS)
        evaluate_split(trainer.model, trainer.tokenizer, config, "test", run_dir, trainer.device)


train_main = hydra_command(train_job)


# --------------------------------------------------------------------------- seq2seq-average


def parse_key_values(argv: list[str], defaults: dict[str, str]) -> dict[str, str]:
    """`key=value` arguments; unknown keys are errors naming the accepted ones."""
    values = dict(defaults)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UserError(
                f"unknown argument '{arg}'; {hint}accepted: "
                f"{', '.join(f'{k}=...' for k in defaults)}"
            )
        values[key] = value
    missing = [k for k, v in values.items() if v == ""]
    if missing:
        raise UserError(f"missing argument(s): {', '.join(f'{k}=...' for k in missing)}")
    return values


def average_main() -> None:
    """seq2seq-average run=<run dir> [last=5] [out=<run dir>/model.avg.safetensors]"""
    from seq2seq import checkpoint

    def job() -> None:
        args = parse_key_values(sys.argv[1:], {"run": "", "last": "5", "out": "-"})
        run_dir = Path(args["run"])
        if not args["last"].isdigit() or int(args["last"]) < 1:
            raise UserError(f"last must be a positive integer, got '{args['last']}'")
        paths = [p / checkpoint.WEIGHTS for p in checkpoint.step_dirs(run_dir)]
        paths = paths[-int(args["last"]) :]
        if not paths:
            raise UserError(f"no checkpoints in {run_dir / checkpoint.CHECKPOINTS}")
        out = run_dir / "model.avg.safetensors" if args["out"] == "-" else Path(args["out"])
        checkpoint.average_checkpoints(paths, out)
        print(
            f"averaged {len(paths)} checkpoints ({paths[0].parent.name} .. "
            f"{paths[-1].parent.name}) into {out}"
        )

    exit_on_user_error(job)
