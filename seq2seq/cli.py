"""Console entry points.

`seq2seq-train` and `seq2seq-info` compose the Hydra config in `conf/` (recipes in `recipes/`);
`seq2seq-average` works on a run directory with `key=value` arguments. Mistakes in the command
line are reported in one line with exit status 2, never with a traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import datetime
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from seq2seq.config import Config, DecodeConfig, load_saved_config, register_configs, schema_keys
from seq2seq.constants import EOS_ID
from seq2seq.errors import UserError
from seq2seq.metrics import format_score

CONFIG_MODULE = "seq2seq.conf"
log = logging.getLogger("seq2seq")


# --------------------------------------------------------------------------- config errors


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


# Hydra flags whose next argument is their value, not an override
HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i"}
HYDRA_FLAGS_UNCHECKED = {
    *("-m", "--multirun", "-sc", "--shell-completion"),
    *("-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir"),
}


def command_line_overrides(argv: list[str]) -> list[str] | None:
    """The key=value overrides to check, or None when they cannot be composed alone (multirun
    sweeps, shell completion, another config). `--cfg job` and `--help` keep the check."""
    if any(arg.split("=")[0] in HYDRA_FLAGS_UNCHECKED for arg in argv):
        return None
    overrides, skip = [], False
    for arg in argv:
        if skip or arg.startswith("-"):
            skip = arg in HYDRA_FLAGS_WITH_VALUE
            continue
        overrides.append(arg)
    return overrides


# --------------------------------------------------------------------------- running jobs


def setup_logging(run_dir: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if run_dir is not None and int(os.environ.get("RANK", "0")) == 0:  # torchrun: rank 0 writes
        run_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(run_dir / "train.log"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)


def exit_on_user_error(job: Callable[[], None]) -> None:
    """Run `job`; a user's mistake is one line and exit status 2, Ctrl-C exit status 130."""
    try:
        job()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


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


CONFIG_GROUPS = ("recipe", "model", "data", "tokenizer", "optim", "train", "decode")


def default_run_dir() -> Path:
    recipe = HydraConfig.get().runtime.choices.get("recipe") or "custom"
    return Path("runs") / recipe / datetime.now().strftime("%Y%m%d-%H%M%S")


def chosen_groups() -> dict[str, str]:
    """The config groups this command selected, e.g. {"recipe": "multi30k_en_de", "model": ...}."""
    choices = HydraConfig.get().runtime.choices
    return {group: choices[group] for group in CONFIG_GROUPS if choices.get(group) is not None}


def resume_config(run_dir: Path, overrides: list[str]) -> Config:
    """The run's saved config, with the command line's key=value overrides applied on top.

    Rerunning the command that started the run is allowed: group choices equal to the run's
    (recipe=..., model=...) are accepted; different ones are an error.
    """
    from seq2seq.checkpoint import read_meta

    saved_choices = (
        read_meta(run_dir).get("choices", {}) if (run_dir / "meta.json").is_file() else {}
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
    saved = load_saved_config(run_dir / "config.yaml")
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
    trainer = train(config, run_dir, chosen_groups())
    if trainer.world.is_main and config.train.test_at_end:
        from seq2seq import checkpoint

        checkpoint.load_weights(trainer.model, run_dir / checkpoint.BEST_WEIGHTS)
        evaluate_split(trainer.model, trainer.tokenizer, config, "test", run_dir, trainer.device)


train_main = hydra_command(train_job)


# --------------------------------------------------------------------------- seq2seq-average


def usage(defaults: dict[str, str]) -> str:
    """`usage: seq2seq-x run=... [input=-] ...`: required keys first, defaults shown."""
    required = [f"{key}=..." for key, value in defaults.items() if value == ""]
    optional = [f"[{key}={value}]" for key, value in defaults.items() if value != ""]
    return " ".join([f"usage: {Path(sys.argv[0]).name}", *required, *optional])


def parse_key_values(argv: list[str], defaults: dict[str, str]) -> dict[str, str]:
    """`key=value` arguments; unknown keys are errors naming the accepted ones."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(usage(defaults))
        raise SystemExit(0)
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


AVERAGE_ARGS = {"run": "", "last": "5", "out": "-"}


def average_main() -> None:
    """seq2seq-average run=<run dir> [last=5] [out=<run dir>/model.avg.safetensors]"""
    from seq2seq import checkpoint

    def job() -> None:
        args = parse_key_values(sys.argv[1:], AVERAGE_ARGS)
        run_dir = Path(args["run"])
        if not args["last"].isdigit() or int(args["last"]) < 1:
            raise UserError(f"last must be a positive integer, got '{args['last']}'")
        paths = [p / checkpoint.WEIGHTS for p in checkpoint.step_dirs(run_dir)]
        paths = paths[-int(args["last"]) :]
        if not paths:
            raise UserError(f"no checkpoints in {run_dir / checkpoint.CHECKPOINTS}")
        out = run_dir / checkpoint.AVERAGE_WEIGHTS if args["out"] == "-" else Path(args["out"])
        checkpoint.check_average_output(out)
        checkpoint.average_checkpoints(paths, out)
        print(
            f"averaged {len(paths)} checkpoints ({paths[0].parent.name} .. "
            f"{paths[-1].parent.name}) into {out}"
        )

    exit_on_user_error(job)


# --------------------------------------------------------------------------- decode.* arguments


def split_decode_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """(other arguments, decode.* overrides)."""
    decode = [a for a in argv if a.startswith("decode.")]
    return [a for a in argv if not a.startswith("decode.")], decode


def with_decode_overrides(decode: DecodeConfig, overrides: list[str]) -> DecodeConfig:
    """The run's decoding settings with `decode.key=value` overrides, type-checked."""
    if not overrides:
        return decode
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(decode),
            OmegaConf.from_dotlist([o.removeprefix("decode.") for o in overrides]),
        )
        return OmegaConf.to_object(merged)
    except UserError:
        raise
    except Exception as error:
        key = getattr(error, "full_key", "") or ""
        if "not in" in str(error):
            known = [f"decode.{f.name}" for f in fields(DecodeConfig)]
            close = difflib.get_close_matches(f"decode.{key}", known, n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise UserError(f"unknown decoding option 'decode.{key}'{hint}") from None
        first = str(error).strip().splitlines()[0]
        raise UserError(f"invalid decoding option decode.{key}: {first}") from None


# --------------------------------------------------------------------------- seq2seq-translate


def read_input(path: str) -> Iterator[str]:
    """Lines of a file or of stdin ("-"), decoded strictly; invalid UTF-8 names the line."""
    stream = sys.stdin.buffer if path == "-" else open_input_file(Path(path))
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            name = "standard input" if path == "-" else path
            raise UserError(f"{name}: invalid UTF-8 on line {number}") from None


def open_input_file(path: Path):
    if not path.exists():
        raise UserError(f"input file not found: {path}")
    if path.is_dir():
        raise UserError(f"input {path} is a directory, not a file")
    return open(path, "rb")  # noqa: SIM115 (closed when the generator ends)


def format_translation(index: int, translation, nbest: int) -> str:
    """One line, or with decode.nbest > 1 exactly `nbest` TSV lines: input index (from 0),
    rank (from 1), score (length-normalised log-probability, nan for an empty input), text."""
    if nbest == 1:
        return translation.text + "\n"
    missing = nbest - len(translation.nbest)  # an empty input line has no hypotheses
    rows = translation.nbest + [(float("nan"), "")] * max(missing, 0)
    return "".join(
        f"{index}\t{rank}\t{score:.4f}\t{text}\n"
        for rank, (score, text) in enumerate(rows, start=1)
    )


TRANSLATE_ARGS = {
    "run": "",
    "input": "-",
    "output": "-",
    "checkpoint": "best",
    "device": "auto",
    "precision": "fp32",
    "threads": "0",
    "chunk": "5000",
}


def translate_main() -> None:
    """seq2seq-translate run=<run dir> [input=-] [output=-] [checkpoint=best|last|average|<file>]
    [device=auto] [precision=fp32|bf16] [threads=N] [decode.KEY=VALUE ...]"""

    def job() -> None:
        from seq2seq.translate import Translator, load_run_config

        argv, decode_args = split_decode_arguments(sys.argv[1:])
        args = parse_key_values(argv, TRANSLATE_ARGS)
        set_threads(args["threads"])
        run_dir = Path(args["run"])
        decode = (
            with_decode_overrides(load_run_config(run_dir).decode, decode_args)
            if (run_dir / "config.yaml").is_file()
            else None
        )
        translator = Translator.from_run(
            run_dir, args["checkpoint"], args["device"], decode, args["precision"]
        )
        write_translations(translator, args)
        warn_about_truncation(translator)

    exit_on_user_error(job)


def warn_about_truncation(translator) -> None:
    if translator.truncated:
        print(
            f"warning: {translator.truncated} input line(s) longer than "
            f"{translator.max_source_tokens} tokens were truncated",
            file=sys.stderr,
        )


def write_translations(translator, args: dict[str, str]) -> None:
    """Stream to stdout, or write a file under a temporary name renamed at the end."""
    lines = read_input(args["input"])
    translations = translator.translate_stream(lines, chunk_size=positive_int(args, "chunk"))
    nbest = translator.decode.nbest
    if args["output"] == "-":
        if hasattr(sys.stdout, "reconfigure"):  # UTF-8 like the input, whatever the locale
            sys.stdout.reconfigure(encoding="utf-8")
        for index, translation in enumerate(translations):
            sys.stdout.write(format_translation(index, translation, nbest))
        sys.stdout.flush()
        return
    output = Path(args["output"])
    if not output.parent.is_dir():
        raise UserError(f"cannot write {output}: directory {output.parent} does not exist")
    temporary = output.with_name(f".{output.name}.tmp")
    try:
        stream = open(temporary, "w", encoding="utf-8")  # noqa: SIM115
    except OSError as error:
        raise UserError(f"cannot write {output}: {error.strerror}") from None
    written = 0
    try:
        with stream, progress_bar(translator), terminate_as_exit():
            for index, translation in enumerate(translations):
                stream.write(format_translation(index, translation, nbest))
                written = index + 1
        os.replace(temporary, output)
        output.with_name(f"{output.name}.partial").unlink(missing_ok=True)  # an earlier run's
    except BaseException:
        keep_partial_output(temporary, output, written)
        raise
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def progress_bar(translator) -> Iterator[None]:
    """A progress bar on stderr (when it is a terminal), advanced after every batch."""
    with tqdm(unit=" sentences", file=sys.stderr, disable=None, smoothing=0.1) as bar:
        translator.progress = bar.update
        try:
            yield
        finally:
            translator.progress = None


def keep_partial_output(temporary: Path, output: Path, written: int) -> None:
    """After a failure or Ctrl-C, the translations finished so far stay in <output>.partial."""
    if written == 0 or not temporary.is_file():
        return
    partial = output.with_name(f"{output.name}.partial")
    try:
        os.replace(temporary, partial)
    except OSError as error:
        print(f"stopped; could not keep the finished translations: {error}", file=sys.stderr)
        return
    print(f"stopped: the first {written} translation(s) are in {partial}", file=sys.stderr)


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM (a scheduler, `kill`) ends the process like Ctrl-C, through `finally` blocks,
    instead of at once; only SIGKILL cannot be caught."""

    def exit_on(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, exit_on)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_bool(args: dict[str, str], key: str) -> bool:
    value = args[key].lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise UserError(f"{key} must be true or false, got '{args[key]}'")
    return value in ("true", "1", "yes")


def positive_int(args: dict[str, str], key: str) -> int:
    value = args[key]
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{key} must be a positive integer, got '{value}'")
    return int(value)


def set_threads(value: str) -> None:
    if not value.isdigit():
        raise UserError(f"threads must be a non-negative integer, got '{value}'")
    if int(value) > 0:
        torch.set_num_threads(int(value))


# --------------------------------------------------------------------------- seq2seq-evaluate


EVALUATE_ARGS = {
    "run": "-",
    "split": "-",
    "src": "-",
    "ref": "-",
    "hyp": "-",
    "testset": "-",
    "langpair": "-",
    "out": "-",
    "checkpoint": "best",
    "device": "auto",
    "precision": "fp32",
    "threads": "0",
    "metrics": "bleu,chrf",
    "lowercase": "false",
}


def evaluate_main() -> None:
    """seq2seq-evaluate hyp=<file> ref=<file>
    | run=<run dir> src=<file> ref=<file>
    | run=<run dir> split=<test|valid|split name>
    | run=<run dir> testset=<sacreBLEU test set> langpair=<src-tgt>
    [metrics=bleu,chrf,ter] [lowercase=false] [checkpoint=best] [decode.KEY=VALUE ...]"""

    def job() -> None:
        argv, decode_args = split_decode_arguments(sys.argv[1:])
        args = parse_key_values(argv, EVALUATE_ARGS)
        set_threads(args["threads"])
        metrics = tuple(m.strip() for m in args["metrics"].split(","))
        unknown = [m for m in metrics if m not in ("bleu", "chrf", "ter")]
        if unknown:
            raise UserError(f"unknown metric(s) {', '.join(unknown)}; choose from bleu, chrf, ter")
        lowercase = parse_bool(args, "lowercase")
        for score in run_evaluation(args, decode_args, metrics, lowercase).values():
            print(format_score(score))

    exit_on_user_error(job)


def run_evaluation(
    args: dict[str, str], decode_args: list[str], metrics: tuple[str, ...], lowercase: bool
) -> dict:
    from seq2seq.evaluate import (
        check_langpair,
        evaluate_split,
        read_text_lines,
        sacrebleu_test_set,
        score_files,
        translate_and_score,
    )
    from seq2seq.translate import Translator, load_run_config

    given = {k for k, v in args.items() if v != "-"}
    if {"hyp", "ref"} <= given and "run" not in given:
        hyp = Path(args["hyp"])
        out_dir = Path(args["out"]) if "out" in given else hyp.parent
        return score_files(hyp, Path(args["ref"]), metrics, lowercase, out_dir)
    if "run" not in given:
        raise UserError(
            "give hyp=<file> ref=<file>, or run=<run dir> with src=+ref=, split= "
            "or testset=+langpair="
        )
    run_dir = Path(args["run"])
    config = load_run_config(run_dir)
    config.decode = with_decode_overrides(config.decode, decode_args)
    translator = Translator.from_run(
        run_dir, args["checkpoint"], args["device"], config.decode, args["precision"]
    )
    out_dir = Path(args["out"]) if "out" in given else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if "split" in given:
        return evaluate_split(
            translator.model,
            translator.tokenizer,
            config,
            args["split"],
            out_dir,
            translator.device,
            metrics,
            lowercase,
            verbose=False,
        )
    if {"src", "ref"} <= given:
        sources = read_text_lines(Path(args["src"]))
        references = [read_text_lines(Path(args["ref"]))]
        hyp_path = out_dir / f"hyp.{Path(args['src']).name}.txt"
        key = args["src"]
    elif {"testset", "langpair"} <= given:
        check_langpair(args["langpair"], config.data.src_lang, config.data.tgt_lang)
        sources, references = sacrebleu_test_set(args["testset"], args["langpair"])
        hyp_path = out_dir / f"hyp.{args['testset'].replace('/', '_')}.{args['langpair']}.txt"
        key = f"{args['testset']}:{args['langpair']}"
    else:
        raise UserError(
            "with run=, give src=<file> ref=<file>, split=<name> or testset=<name> "
            "langpair=<src-tgt>"
        )
    with progress_bar(translator):
        scores = translate_and_score(
            translator, sources, references, hyp_path, key, metrics, lowercase
        )
    warn_about_truncation(translator)
    return scores


# --------------------------------------------------------------------------- seq2seq-export


EXPORT_ARGS = {
    "run": "",
    "to": "hf",
    "out": "",
    "checkpoint": "best",
    "quantization": "float32",
    "overwrite": "false",
}
EXPORT_FORMATS = {"hf": "Hugging Face MarianMTModel", "ct2": "CTranslate2"}


def export_main() -> None:
    """seq2seq-export run=<run dir> to=hf|ct2 out=<dir> [checkpoint=best|last|average|<file>]
    [quantization=float32|int8|... (ct2 only)] [overwrite=false]: `out` is a new or empty
    directory outside the run; overwrite=true replaces the files the export writes in a
    non-empty one (other files stay)."""

    def job() -> None:
        from seq2seq.export_output import check_export_output
        from seq2seq.translate import Translator

        args = parse_key_values(sys.argv[1:], EXPORT_ARGS)
        if args["to"] not in EXPORT_FORMATS:
            raise UserError(
                f"unknown export format to={args['to']}; available: {', '.join(EXPORT_FORMATS)}"
            )
        if args["to"] == "hf" and args["quantization"] != "float32":
            raise UserError("quantization=... applies to to=ct2 only")
        out = Path(args["out"])
        check_export_output(Path(args["run"]), out, parse_bool(args, "overwrite"))
        translator = Translator.from_run(Path(args["run"]), args["checkpoint"], "cpu")
        if args["to"] == "hf":
            from seq2seq.export import export_hf

            export_hf(translator.model, translator.tokenizer, out)
        else:
            from seq2seq.export_ct2 import export_ct2

            export_ct2(translator.model, translator.tokenizer, out, args["quantization"])
        print(f"exported {args['run']} to {out} ({EXPORT_FORMATS[args['to']]})")

    exit_on_user_error(job)


# --------------------------------------------------------------------------- seq2seq-attention


ATTENTION_ARGS = {
    "run": "",
    "text": "-",
    "input": "-",
    "lines": "1",
    "out": "attention",
    "checkpoint": "best",
}


def attention_main() -> None:
    """seq2seq-attention run=<run dir> text="..." | input=<file> [lines=1-3] [out=attention]
    [checkpoint=best|last|average|<file>]: heatmaps of every attention and an HTML page."""

    def job() -> None:
        from seq2seq.inspection import attention_maps
        from seq2seq.plots import attention_figures, attention_page, pyplot
        from seq2seq.translate import Translator

        args = parse_key_values(sys.argv[1:], ATTENTION_ARGS)
        sentences = attention_inputs(args)
        pyplot()  # a missing matplotlib is reported before the model is loaded
        translator = Translator.from_run(Path(args["run"]), args["checkpoint"], "cpu")
        tokenizer, out = translator.tokenizer, Path(args["out"])
        out.mkdir(parents=True, exist_ok=True)
        pages = []
        for number, sentence in enumerate(sentences, 1):
            source = tokenizer.encode([sentence.strip()], "src")[0][: translator.max_source_tokens]
            target = [*translator.search_ids([source])[0][0].tokens, EOS_ID]  # (its best)
            maps = attention_maps(translator.model, [*source, EOS_ID], target)
            figures = attention_figures(
                maps,
                [*tokenizer.pieces(source, "src"), "</s>"],
                [*tokenizer.pieces(target[:-1], "tgt"), "</s>"],
                out,
                f"sentence{number}",
            )
            translation = tokenizer.decode([target], "tgt")[0]
            pages.append({"source": sentence, "translation": translation, "figures": figures})
        page = attention_page(out, pages)
        print(f"wrote {len(pages)} sentence(s) of attention maps: {page}")

    exit_on_user_error(job)


def attention_inputs(args: dict[str, str]) -> list[str]:
    """The sentences to show: text=..., or lines=A-B (1-based) of input=<file>."""
    if (args["text"] == "-") == (args["input"] == "-"):
        raise UserError('give exactly one of text="a sentence" or input=<file> [lines=1-3]')
    if args["text"] != "-":
        if not args["text"].strip():
            raise UserError("text= is empty; give a sentence to translate")
        return [args["text"]]
    first, _, last = args["lines"].partition("-")
    if not first.isdigit() or not (last or first).isdigit() or int(first) < 1:
        raise UserError(f"lines must look like 3 or 1-5 (1-based), got '{args['lines']}'")
    start, stop = int(first), int(last or first)
    chosen = [
        line for number, line in enumerate(read_input(args["input"]), 1) if start <= number <= stop
    ]
    if not chosen:
        raise UserError(f"{args['input']} has no lines {args['lines']}")
    if not any(line.strip() for line in chosen):
        raise UserError(f"lines {args['lines']} of {args['input']} are empty")
    return [line for line in chosen if line.strip()]


# --------------------------------------------------------------------------- seq2seq-plot


PLOT_ARGS = {"run": "", "out": "-"}


def plot_main() -> None:
    """seq2seq-plot run=<run dir> [out=<run dir>/training_curves.png]"""

    def job() -> None:
        from seq2seq.plots import training_curves

        args = parse_key_values(sys.argv[1:], PLOT_ARGS)
        run_dir = Path(args["run"])
        if not run_dir.is_dir():
            raise UserError(f"run directory {run_dir} does not exist")
        out = run_dir / "training_curves.png" if args["out"] == "-" else Path(args["out"])
        print(f"wrote {training_curves(run_dir, out)}")

    exit_on_user_error(job)


# The key=value commands and the arguments each accepts (the docs test checks every example).
KEY_VALUE_COMMANDS = {
    "seq2seq-average": AVERAGE_ARGS,
    "seq2seq-translate": TRANSLATE_ARGS,
    "seq2seq-evaluate": EVALUATE_ARGS,
    "seq2seq-export": EXPORT_ARGS,
    "seq2seq-attention": ATTENTION_ARGS,
    "seq2seq-plot": PLOT_ARGS,
}
