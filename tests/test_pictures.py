"""The pictures the toolkit draws: attention heatmaps with their HTML page, training curves,
and the concept figures of the docs."""

from __future__ import annotations

import json

import pytest
from helpers import run_command
from omegaconf import OmegaConf

from seq2seq import plots

pytest.importorskip("matplotlib")
PNG = b"\x89PNG"


def test_attention_command_writes_every_heatmap_and_a_page(toy_run, tmp_path):
    out = tmp_path / "attention"
    result = run_command(
        "seq2seq-attention", f"run={toy_run}", "text=the red dog runs", f"out={out}"
    )
    assert result.returncode == 0, result.stderr
    names = {p.name for p in out.iterdir()}
    figures = {f"sentence1_{kind}.png" for kind in ("cross", "cross_heads", "encoder", "decoder")}
    assert figures | {"index.html"} == names
    for name in figures:
        assert (out / name).read_bytes().startswith(PNG)
    page = (out / "index.html").read_text()
    assert "the red dog runs" in page and all(name in page for name in figures)


def test_attention_of_chosen_lines_of_a_file(toy_run, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("the cat sits\n\nthe big tree\nred car\n")
    out = tmp_path / "attention"
    result = run_command(
        "seq2seq-attention", f"run={toy_run}", f"input={source}", "lines=2-3", f"out={out}"
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 1 sentence(s)" in result.stdout  # line 2 is empty: nothing to show
    assert "the big tree" in (out / "index.html").read_text()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["text=a b", "input=x.txt"], "give exactly one of text="),
        ([], "give exactly one of text="),
        (["input=x.txt", "lines=0"], "lines must look like"),
        (["text= "], "text= is empty"),
    ],
)
def test_attention_mistakes_are_one_line(toy_run, arguments, message):
    result = run_command("seq2seq-attention", f"run={toy_run}", *arguments)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_plot_command_draws_the_training_curves(toy_run, tmp_path):
    out = tmp_path / "curves.png"
    result = run_command("seq2seq-plot", f"run={toy_run}", f"out={out}")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(PNG)


def test_plot_of_a_directory_without_logs_is_one_line(tmp_path):
    result = run_command("seq2seq-plot", f"run={tmp_path}")
    assert result.returncode == 2
    assert "metrics.jsonl not found" in result.stderr


@pytest.mark.parametrize(
    "draw", [plots.positions_figure, plots.schedule_figure, plots.label_smoothing_figure]
)
def test_concept_figures_are_drawn(draw, tmp_path):
    out = draw(tmp_path / "figure.png")
    assert out.read_bytes().startswith(PNG)


def budget_run(toy_run, directory, minutes: float, bleu: float):
    """A finished run trained with a budget of `minutes` that scored `bleu` on its test set."""
    directory.mkdir(parents=True)
    config = OmegaConf.load(toy_run / "config.yaml")
    config.train.max_minutes = minutes
    OmegaConf.save(config, directory / "config.yaml")
    results = {config.data.test: {"bleu": {"score": bleu}}}
    (directory / "results.json").write_text(json.dumps(results))
    return directory


def test_plot_draws_test_bleu_against_the_budget_one_line_per_folder(toy_run, tmp_path):
    runs = [
        budget_run(toy_run, tmp_path / "ours" / "20min", 20, 30.5),
        budget_run(toy_run, tmp_path / "ours" / "5min", 5, 21.0),
        budget_run(toy_run, tmp_path / "peer" / "5min", 5, 12.0),
    ]
    assert plots.budget_series(runs) == {"ours": [(5.0, 21.0), (20.0, 30.5)], "peer": [(5.0, 12.0)]}
    (tmp_path / "ours" / "20min.log").write_text("a log beside the runs: not a run\n")
    out = tmp_path / "curve.png"
    result = run_command("seq2seq-plot", f"runs={tmp_path}/ours/*,{runs[2]}", f"out={out}")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(PNG)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([], "give run=<run dir> (training curves) or runs=<dir>,<dir>,... (budgets)"),
        (["run=a", "runs=b"], "give run=<run dir> (training curves) or runs="),
        (["runs=nowhere/*"], "runs=nowhere/*: no directory matches nowhere/*"),
        (["runs=missing"], "runs=missing: run directory missing does not exist"),
        (["runs=,"], "runs= is empty: give run directories or patterns"),
        (["runs={toy_run}"], "has no test score (a run scores data.test when training ends"),
    ],
)
def test_budget_plot_mistakes_are_one_line(toy_run, tmp_path, arguments, message):
    if "{toy_run}" in "".join(arguments):  # a run without results.json
        bare = tmp_path / "bare"
        bare.mkdir()
        (bare / "config.yaml").write_text((toy_run / "config.yaml").read_text())
        arguments = [f"runs={bare}"]
    result = run_command("seq2seq-plot", *arguments)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_run_without_a_time_budget_is_placed_at_the_minutes_it_trained(toy_run, tmp_path):
    (minutes, bleu) = plots.budget_point(toy_run)
    trained = max(r.get("elapsed_s", 0) for r in plots.read_metrics(toy_run)) / 60
    results = json.loads((toy_run / "results.json").read_text())
    assert minutes == pytest.approx(trained) and minutes > 0
    assert bleu == next(iter(results.values()))["bleu"]["score"]


def test_folders_of_the_same_name_stay_apart(toy_run, tmp_path):
    runs = [
        budget_run(toy_run, tmp_path / "a" / "ours" / "5min", 5, 20.0),
        budget_run(toy_run, tmp_path / "b" / "ours" / "5min", 5, 25.0),
    ]
    assert plots.budget_series(runs) == {
        str(tmp_path / "a" / "ours"): [(5.0, 20.0)],
        str(tmp_path / "b" / "ours"): [(5.0, 25.0)],
    }
