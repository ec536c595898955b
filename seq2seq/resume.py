"""Resuming a run: its saved config, with the command line's `key=value` overrides on top
(new limits such as train.max_steps apply; a different recipe or model size does not)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from seq2seq import constants
from seq2seq.checkpoint import read_meta
from seq2seq.config import CONFIG_GROUPS, Config, load_saved_config, to_dataclass
from seq2seq.errors import UserError, first_line


def resume_config(run_dir: Path, overrides: list[str]) -> Config:
    """The run's saved config, with the command line's key=value overrides applied on top.

    Rerunning the command that started the run is allowed: group choices equal to the run's
    (recipe=..., model=...) are accepted; different ones are an error.
    """
    saved_choices = (
        read_meta(run_dir).get("choices", {}) if (run_dir / constants.META).is_file() else {}
    )
    changes = []
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key in CONFIG_GROUPS:
            if saved_choices.get(key) == value:
                continue  # the same choice the run was started with
            raise UserError(
                f"cannot change '{key}' when resuming {run_dir}; only key=value "
                "overrides such as train.max_steps=... apply to an existing run"
            )
        if key != "run_dir":
            changes.append(override)
    saved = load_saved_config(run_dir / constants.CONFIG)
    try:
        return to_dataclass(OmegaConf.merge(saved, OmegaConf.from_dotlist(changes)), Config)
    except UserError:
        raise
    except Exception as error:
        raise UserError(
            f"cannot apply {' '.join(changes)} to {run_dir}: {first_line(error)}"
        ) from None
