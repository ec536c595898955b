"""Checking command-line overrides against the config schema, before Hydra runs a command.

Every override (`key=value`, `+key=value`, `++key=value`, `~key`, `group=option`) is checked
against the dataclasses of seq2seq/config.py and the option files of each config group, so a
mistake is one line whose words do not depend on the version of Hydra or OmegaConf. The composed
config is then validated (the dataclasses' `validate()`), once per value of a `-m` sweep.
"""

from __future__ import annotations

import copy
import difflib
import functools
import shlex
from dataclasses import is_dataclass
from enum import Enum
from types import NoneType, UnionType
from typing import Any, cast, get_args, get_type_hints

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from seq2seq.config import (
    CONFIG_GROUPS,
    CONFIG_MODULE,
    Config,
    group_options,
    register_configs,
    schema_keys,
)
from seq2seq.errors import UserError, first_line

PARSER = OverridesParser.create()
TYPE_NAMES = {int: "Integer", float: "Float", bool: "Boolean", str: "String"}
BOOL_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")

# Hydra's flags whose next argument is their value, not an override
HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i"}
HYDRA_FLAGS_MULTIRUN = {"-m", "--multirun"}
HYDRA_FLAGS_UNCHECKED = {  # shell completion, or another config than seq2seq's
    *("-sc", "--shell-completion"),
    *("-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir"),
}


def check_command_line(argv: list[str]) -> None:
    """Check the overrides of a Hydra command line (`--cfg job` and `--help` keep the check)."""
    flags = {arg.split("=")[0] for arg in argv if arg.startswith("-")}
    if flags & HYDRA_FLAGS_UNCHECKED:
        return
    overrides, skip = [], False
    for arg in argv:
        if skip or arg.startswith("-"):
            skip = arg in HYDRA_FLAGS_WITH_VALUE
            continue
        overrides.append(arg)
    multirun = bool(flags & HYDRA_FLAGS_MULTIRUN) or "hydra.mode=MULTIRUN" in overrides
    check_overrides(overrides, multirun)


def check_overrides(overrides: list[str], multirun: bool = False) -> None:
    """Raise UserError for the first override that does not fit the schema, then validate the
    composed config with each value of each sweep (the other sweeps at their first value)."""
    register_configs()
    jobs = [single_values(parse(argument), multirun) for argument in overrides]
    for argument in (a for values in jobs for a in values):
        check_override(parse(argument))
    first = [values[0] for values in jobs if values]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            composed = compose_config(first)
            validate(composed)
            for values in jobs:
                for argument in values[1:]:
                    job = with_value(composed, first, values[0], parse(argument))
                    if job is not None:
                        validate(job)
    finally:
        GlobalHydra.instance().clear()


# --------------------------------------------------------------------------- one override


def parse(argument: str) -> Override:
    """The override in Hydra's grammar; a one-line error when it cannot be read."""
    try:
        override = PARSER.parse_override(argument)
    except Exception:  # Hydra and its ANTLR parser raise several types
        raise UserError(unparsable(argument)) from None
    if not override.key_or_group:
        raise UserError(f"'{argument}' has no key; write key=value, e.g. train.max_steps=1000")
    return override


def unparsable(argument: str) -> str:
    """Why `argument` cannot be read and, when quoting the value fixes it, the quoted form."""
    key, sep, value = argument.partition("=")
    if not sep:
        return f"'{argument}' is not an override; write key=value (or ~key to delete a key)"
    escaped = value.replace('"', '\\"')
    quoted = f'{key}="{escaped}"'
    try:
        fixed = PARSER.parse_override(quoted).value() == value
    except Exception:
        fixed = False
    if not fixed:
        return f"cannot read the override '{argument}'; write key=value, e.g. train.max_steps=1000"
    return (
        f"cannot read the value of '{argument}': a value holding quotes, '=', brackets or "
        f"parentheses must be quoted, as in {quoted} (in a shell: {shlex.quote(quoted)})"
    )


def single_values(override: Override, multirun: bool) -> list[str]:
    """The override once per value of its sweep (`a=1,2` -> `a=1`, `a=2`), or itself."""
    if not override.is_sweep_override():
        return [str(override.input_line)]
    if not multirun:
        raise UserError(
            f"'{override.input_line}' gives several values: add -m to run one job per value, "
            f"or quote it to give one text value: {override.get_key_element()}='...'"
        )
    try:
        values = list(override.sweep_string_iterator())
    except Exception:  # interval() and glob() have no list of values: check the key only
        if override.key_or_group not in CONFIG_GROUPS and not is_hydra_key(override.key_or_group):
            check_key(override)
        return []
    return [f"{override.get_key_element()}={value}" for value in values]


def check_override(override: Override) -> None:
    """Raise UserError when the key, group option or value does not fit the schema."""
    key = override.key_or_group
    if is_hydra_key(key):
        return  # Hydra's own settings: Hydra checks them when composing
    if key in CONFIG_GROUPS:
        check_group_choice(override)
        return
    check_key(override)
    if not override.is_delete():
        check_value(override)


def is_hydra_key(key: str) -> bool:
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def check_group_choice(override: Override) -> None:
    group, value = override.key_or_group, override.value()
    if override.is_add() or override.is_force_add():
        raise UserError(
            f"cannot add '{override.input_line}': choose a {group} with {group}=<name>, without '+'"
        )
    options = group_options(group)
    if override.is_delete() or value in options:
        return
    shown = override.get_value_element_as_str()
    if not options:
        example = next(k for k in schema_keys(Config) if k.startswith(f"{group}."))
        raise UserError(
            f"unknown {group} '{shown}': {group} has no named options; set its keys instead, "
            f"e.g. {example}=..."
        )
    raise UserError(f"unknown {group} '{shown}'; available: {', '.join(options)}")


def check_key(override: Override) -> None:
    """Raise UserError for a key that is not in the schema, or that `+` adds or `~` deletes."""
    key = override.key_or_group
    known = set(schema_keys(Config))
    parts = key.split(".")
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if prefix not in known:
            shown = key if prefix in CONFIG_GROUPS else prefix
            raise UserError(f"unknown config key '{shown}'{closest_keys(shown)}")
    if override.is_add():
        raise UserError(
            f"cannot add '{override.input_line}': {key} is already in the config; "
            f"set it with {key}=..., without '+'"
        )
    if override.is_delete():
        raise UserError(
            f"cannot delete {key}: every key of the config has a value; set it with {key}=..."
        )


def closest_keys(key: str) -> str:
    """`; did you mean a or b?` with the known keys closest to a misspelled one, or ""."""
    known = schema_keys(Config)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if not close:  # compare the last part only: `model.dmodel` vs `d_model`
        last = key.rsplit(".", 1)[-1]
        close = [
            k for k in known if difflib.get_close_matches(last, [k.rsplit(".", 1)[-1]], cutoff=0.7)
        ][:3]
    return f"; did you mean {' or '.join(close)}?" if close else ""


def check_value(override: Override) -> None:
    """Raise UserError when the value cannot be converted to its key's type."""
    value, kind = override.value(), key_types()[override.key_or_group]
    if isinstance(value, str) and "${" in value:
        return  # an interpolation: resolved, then checked, when the config is composed
    reason = conversion_error(value, kind)
    if reason:
        raise UserError(f"invalid config value {override.input_line}: {reason}")


def conversion_error(value: Any, kind: Any) -> str | None:
    """Why `value` cannot become a `kind`; None when it can (as OmegaConf converts values)."""
    optional = isinstance(kind, UnionType) and NoneType in get_args(kind)
    if optional:
        kind = next(arg for arg in get_args(kind) if arg is not NoneType)
    if value is None:
        return None if optional else "a value is needed, not null"
    if isinstance(kind, type) and issubclass(kind, Enum):
        names = [member.name for member in kind]
        if value in names:
            return None
        return f"Invalid value '{value}', expected one of [{', '.join(names)}]"
    if not isinstance(value, (list, dict)) and converts(value, kind):
        return None
    return (
        f"Value '{value}' of type '{type(value).__name__}' could not be converted to "
        f"{TYPE_NAMES[kind]}"
    )


def converts(value: object, kind: type) -> bool:
    """Whether a single value (bool, int, float or str) converts to int, float, bool or str."""
    if kind is str:
        return True
    if kind is bool:
        return isinstance(value, bool) or str(value).lower() in BOOL_WORDS
    if isinstance(value, bool) or (kind is int and isinstance(value, float)):
        return False
    try:
        kind(value)
    except (TypeError, ValueError):
        return False
    return True


@functools.cache
def key_types(node: type = Config, prefix: str = "") -> dict[str, Any]:
    """The type of every leaf key of the schema: {"train.max_steps": int, ...}."""
    types: dict[str, Any] = {}
    for name, kind in get_type_hints(node).items():
        if is_dataclass(kind):
            types |= key_types(cast(type, kind), f"{prefix}{name}.")
        else:
            types[f"{prefix}{name}"] = kind
    return types


# --------------------------------------------------------------------------- the composed config


def compose_config(overrides: list[str]) -> DictConfig:
    try:
        return compose("config", overrides=overrides)
    except Exception as error:  # what the schema checks cannot see, e.g. hydra.* settings
        raise UserError(f"cannot compose the config: {first_line(error)}") from None


def validate(composed: DictConfig) -> None:
    """Run every dataclass's `validate()` on the composed config."""
    try:
        OmegaConf.to_object(composed)
    except UserError:
        raise
    except Exception as error:  # e.g. an interpolation of a key that does not exist
        raise UserError(f"invalid config: {first_line(error)}") from None


def with_value(
    composed: DictConfig, first: list[str], base: str, override: Override
) -> DictConfig | None:
    """The config of the job where `override`, one value of a sweep, replaces `base`: composed
    again for a group option, else `composed` with that one key changed (None: nothing to check,
    a deletion or a setting of Hydra's)."""
    key = override.key_or_group
    if key in CONFIG_GROUPS:
        return compose_config([str(override.input_line) if a == base else a for a in first])
    if override.is_delete() or is_hydra_key(key):
        return None
    changed = copy.deepcopy(composed)
    OmegaConf.update(changed, key, override.value(), force_add=True)
    return changed
