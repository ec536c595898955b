"""Console entry points.

`seq2seq-train` and `seq2seq-info` compose the Hydra config in `conf/` (recipes in `recipes/`);
the other commands take `key=value` arguments (`arguments.py`). Each parses its command line
and hands the work to the module named for it. Mistakes in the command line are reported in one
line with exit status 2, never with a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from seq2seq.arguments import (
    ATTENTION_ARGS,
    AVERAGE_ARGS,
    EVALUATE_ARGS,
    EXPORT_ARGS,
    PLOT_ARGS,
    PLOT_USAGE,
    TRANSLATE_ARGS,
    parse_bool,
    parse_key_values,
    positive_int,
    run_list,
    set_threads,
    split_decode_arguments,
)
from seq2seq.config import (
    CONFIG_GROUPS,
    CONFIG_MODULE,
    Config,
    register_configs,
    to_dataclass,
)
from seq2seq.errors import UserError
from seq2seq.overrides import check_command_line

log = logging.getLogger("seq2seq")


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
    return to_dataclass(cfg, Config)


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
        exit_on_user_error(lambda: check_command_line(sys.argv[1:]))
        hydra_main()

    return main


def info_job(cfg: DictConfig) -> None:
    """Print the configured model's architecture and parameter count."""
    from seq2seq.sizes import describe

    print(describe(to_config(cfg).model))


info = hydra_command(info_job)


def train_job(cfg: DictConfig) -> None:
    """Train a model from a recipe; `run_dir=<existing run>` resumes it. With -m, each job of
    the sweep trains in a run directory of its own."""
    from seq2seq.runs import train_run

    hydra_config = HydraConfig.get()
    choices = hydra_config.runtime.choices
    chosen = {group: choices[group] for group in CONFIG_GROUPS if choices.get(group) is not None}
    config = to_config(cfg)
    if hydra_config.mode == RunMode.MULTIRUN:  # the job's folder of the sweep (conf/config.yaml)
        config.run_dir = hydra_config.runtime.output_dir
    train_run(config, chosen, list(hydra_config.overrides.task))


train_main = hydra_command(train_job)


def prepare_job(cfg: DictConfig) -> None:
    """Encode a recipe's corpus into shards once: `out=<dir>`, then train with
    `data.prepared=<dir>`."""
    from seq2seq.checkpoint import locked
    from seq2seq.files import make_directory
    from seq2seq.prepare import describe, prepare
    from seq2seq.runs import setup_logging

    config = to_config(cfg)
    if not config.data.prepared:
        raise UserError("give the directory to prepare into: out=<dir>")
    setup_logging()
    directory = make_directory(Path(config.data.prepared), "out")
    with locked(directory, "seq2seq-prepare"):
        print(describe(prepare(config, directory), directory))


def prepare_overrides(arguments: list[str]) -> list[str]:
    """`out=<dir>` of seq2seq-prepare is `data.prepared=<dir>`, the key training reads."""
    return [
        "data.prepared=" + arg.removeprefix("out=") if arg.startswith("out=") else arg
        for arg in arguments
    ]


def prepare_main() -> None:
    """seq2seq-prepare recipe=<recipe> [overrides] out=<dir>"""
    sys.argv[1:] = prepare_overrides(sys.argv[1:])
    hydra_command(prepare_job)()


def average_main() -> None:
    """seq2seq-average run=<run dir> [last=5] [out=<run dir>/model.avg.safetensors]"""

    def job() -> None:
        from seq2seq.checkpoint import average_last

        args = parse_key_values(sys.argv[1:], AVERAGE_ARGS)
        out = None if args["out"] == "-" else Path(args["out"])
        print(average_last(Path(args["run"]), positive_int(args, "last"), out))

    exit_on_user_error(job)


def translate_main() -> None:
    """seq2seq-translate run=<run dir> [input=-] [output=-] [checkpoint=best|last|average|<file>]
    [device=auto] [precision=fp32|bf16|fp16|auto] [threads=N] [decode.KEY=VALUE ...]"""

    def job() -> None:
        from seq2seq.outputs import write_translations
        from seq2seq.translate import Translator, run_decoding

        argv, decode_args = split_decode_arguments(sys.argv[1:])
        args = parse_key_values(argv, TRANSLATE_ARGS)
        set_threads(args["threads"])
        run_dir = Path(args["run"])
        decode = run_decoding(run_dir, decode_args)
        translator = Translator.from_run(
            run_dir, args["checkpoint"], args["device"], decode, args["precision"]
        )
        write_translations(translator, args["input"], args["output"], positive_int(args, "chunk"))

    exit_on_user_error(job)


def evaluate_main() -> None:
    """seq2seq-evaluate hyp=<file> ref=<file>
    | run=<run dir> src=<file> ref=<file>
    | run=<run dir> split=<test|valid|split name>
    | run=<run dir> testset=<sacreBLEU test set> langpair=<src-tgt>
    [metrics=bleu,chrf,ter] [lowercase=false] [checkpoint=best] [decode.KEY=VALUE ...]"""

    def job() -> None:
        from seq2seq.evaluate import run_evaluation
        from seq2seq.metrics import parse_metrics

        argv, decode_args = split_decode_arguments(sys.argv[1:])
        args = parse_key_values(argv, EVALUATE_ARGS)
        set_threads(args["threads"])
        metrics = parse_metrics(args["metrics"])
        run_evaluation(args, decode_args, metrics, parse_bool(args, "lowercase"))

    exit_on_user_error(job)


def export_main() -> None:
    """seq2seq-export run=<run dir> to=hf|ct2 out=<dir> [checkpoint=best|last|average|<file>]
    [quantization=float32|int8|... (ct2 only)] [overwrite=false]: `out` is a new or empty
    directory outside the run; overwrite=true replaces the files the export writes in a
    non-empty one (other files stay)."""

    def job() -> None:
        from seq2seq.export_output import export_run

        args = parse_key_values(sys.argv[1:], EXPORT_ARGS)
        overwrite = parse_bool(args, "overwrite")
        run_dir, out = Path(args["run"]), Path(args["out"])
        print(
            export_run(
                run_dir, args["to"], out, args["checkpoint"], args["quantization"], overwrite
            )
        )

    exit_on_user_error(job)


def attention_main() -> None:
    """seq2seq-attention run=<run dir> text="..." | input=<file> [lines=1-3] [out=attention]
    [checkpoint=best|last|average|<file>] [max_tokens=50]: heatmaps of every attention (of at
    most max_tokens source and target pieces) and an HTML page."""

    def job() -> None:
        from seq2seq.inspection import attention_report, chosen_sentences
        from seq2seq.plots import pyplot
        from seq2seq.translate import Translator

        args = parse_key_values(sys.argv[1:], ATTENTION_ARGS)
        given = {key: None if value == "-" else value for key, value in args.items()}
        sentences = chosen_sentences(given["text"], given["input"], args["lines"])
        max_tokens = positive_int(args, "max_tokens")
        pyplot()  # a missing matplotlib is reported before the model is loaded
        translator = Translator.from_run(Path(args["run"]), args["checkpoint"], "cpu")
        page = attention_report(translator, sentences, Path(args["out"]), max_tokens)
        print(f"wrote {len(sentences)} sentence(s) of attention maps: {page}")

    exit_on_user_error(job)


def plot_main() -> None:
    """seq2seq-plot run=<run dir> [out=<run dir>/training_curves.png]
    seq2seq-plot runs=<run dir>,<run dir>,... [out=budget_curve.png]"""

    def job() -> None:
        from seq2seq import plots

        args = parse_key_values(sys.argv[1:], PLOT_ARGS, PLOT_USAGE)
        out = None if args["out"] == "-" else Path(args["out"])
        if (args["run"] == "-") == (args["runs"] == "-"):
            raise UserError(
                "give run=<run dir> (training curves) or runs=<dir>,<dir>,... (budgets)"
            )
        if args["run"] != "-":
            print(f"wrote {plots.training_curves(Path(args['run']), out)}")
        else:
            series = plots.budget_series(run_list(args["runs"]))
            print(f"wrote {plots.budget_curve(series, out or Path(plots.BUDGET_CURVE))}")

    exit_on_user_error(job)
