"""Two revisions of seq2seq side by side: decoding and training speed, and identical outputs.

For a change that must not change what users get (a refactoring, a move of code between
modules), this runs each revision's own `bench/decode_speed.py` (our float32 beam search,
batches of 64 and one sentence at a time) and `bench/train_speed.py` (float32 training steps),
and `seq2seq-translate` on the given runs, each in a fresh process, the two revisions
alternating (A B A B ...) so machine noise hits both. Each revision is installed on its own
(`pip install --no-deps --target`) and put first on PYTHONPATH. Reports the medians, the
ratio head/base, and whether the translations are byte-identical.

    python bench/compare_revisions.py --base <git revision> --run <run dir> [--run ...] \
        --multi30k <multi30k dir> --workdir <dir>

The runs must be readable by both revisions (an older revision refuses settings it does not
know the values of, e.g. a newer precision name: edit the copy's config.yaml).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TRAIN_CHILD = """
import importlib.util, json, sys, torch
from pathlib import Path
spec = importlib.util.spec_from_file_location("train_speed", sys.argv[1])
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
torch.set_num_threads(int(sys.argv[4]))
steps = int(sys.argv[5])
data, batches, tokenizer = bench.multi30k_batches(Path(sys.argv[2]), Path(sys.argv[3]), steps + 2)
trainer = bench.our_trainer(data, tokenizer, "fp32")
for batch in batches[:2]:
    trainer.train_step([batch])
speed = bench.tokens_per_second(lambda b: trainer.train_step([b]), batches[2:])
print(json.dumps({"tokens_per_s": speed}))
"""

TRANSLATE_CHILD = (
    "import sys; from seq2seq.cli import translate_main; "
    "sys.argv[0] = 'seq2seq-translate'; translate_main()"
)


def install(source: Path, target: Path) -> None:
    """`source` installed afresh (without dependencies) into the directory `target`."""
    shutil.rmtree(target, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target"]
    subprocess.run([*command, str(target), str(source)], check=True)


def checkout(revision: str, repo: Path, workdir: Path) -> Path:
    """The tree of `revision` ("worktree": the checkout as it is) as a directory."""
    if revision == "worktree":
        return repo
    name = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", revision],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = workdir / f"src_{name}"
    if not tree.is_dir():
        tree.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", revision], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


class Side:
    """One revision: its source tree and the directory it is installed in."""

    def __init__(self, label: str, tree: Path, site: Path, threads: int) -> None:
        self.label, self.tree, self.site = label, tree, site
        self.env = {
            **os.environ,
            "PYTHONPATH": str(site),
            "OMP_NUM_THREADS": str(threads),
            "TORCH_EXTENSIONS_DIR": str(site.parent / f"kernels_{label}"),
        }

    def run(self, arguments: list[str], cwd: Path) -> tuple[float, str]:
        """Seconds and standard output of `python arguments` in this revision."""
        start = time.perf_counter()
        found = subprocess.run(
            [sys.executable, *arguments], env=self.env, cwd=cwd, capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        if found.returncode != 0:
            raise SystemExit(f"{self.label}: {' '.join(arguments)} failed:\n{found.stderr[-2000:]}")
        return seconds, found.stdout


def decode(side: Side, args, batching: str) -> dict:
    script = side.tree / "bench" / "decode_speed.py"
    command = [str(script), "--run", str(args.run[0]), "--multi30k", str(args.multi30k)]
    command += ["--threads", str(args.threads), "--only", "seq2seq", "--batching", batching]
    command += ["--single", str(args.single)]
    _, out = side.run(command, args.workdir)
    return json.loads(out.splitlines()[-1])


def train(side: Side, args) -> float:
    script = side.tree / "bench" / "train_speed.py"
    data = args.workdir / "train_speed"
    command = ["-c", TRAIN_CHILD, str(script), str(args.multi30k), str(data)]
    _, out = side.run([*command, str(args.threads), str(args.steps)], args.workdir)
    return json.loads(out.splitlines()[-1])["tokens_per_s"]


def translate(side: Side, args, run: Path, index: int) -> tuple[float, str]:
    """Seconds of `seq2seq-translate` on the test set, and the SHA-256 of what it wrote."""
    output = args.workdir / f"{side.label}_{index}.txt"
    command = ["-c", TRANSLATE_CHILD, f"run={run}", f"input={args.source}", f"output={output}"]
    seconds, _ = side.run([*command, f"threads={args.threads}"], args.workdir)
    return seconds, hashlib.sha256(output.read_bytes()).hexdigest()


def measure(sides: list[Side], args) -> dict:
    found: dict = {side.label: {} for side in sides}

    def add(side: Side, key: str, value) -> None:
        found[side.label].setdefault(key, []).append(value)

    for _ in range(args.rounds):  # alternating: base head base head ...
        for side in sides:
            for batching in ("batch_64", "batch_1"):
                result = decode(side, args, batching)
                add(side, f"decode_{batching}_s", result["seconds"])
                add(side, f"outputs_{batching}", result["outputs"])
            add(side, "train_tokens_per_s", train(side, args))
            for index, run in enumerate(args.run):
                seconds, digest = translate(side, args, run, index)
                add(side, f"translate_{index}_s", seconds)
                add(side, f"translate_{index}_sha256", digest)
    return found


def summary(found: dict, args) -> dict:
    base = found["base"]
    timed = [key for key in base if key.endswith("_s") or key.endswith("_per_s")]
    report: dict = {}
    for key in timed:
        medians = {label: statistics.median(found[label][key]) for label in found}
        report[key] = {
            "base": round(medians["base"], 2),
            "head": round(medians["head"], 2),
            "head_over_base": round(medians["head"] / medians["base"], 3),
            "all": {label: [round(v, 2) for v in found[label][key]] for label in found},
        }
    for key in base:
        if key.startswith("outputs_") or key.endswith("_sha256"):
            values = [json.dumps(v, sort_keys=True) for label in found for v in found[label][key]]
            report[f"{key}_identical"] = len(set(values)) == 1
    report["runs"] = [str(run) for run in args.run]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--head", default="worktree", help="git revision (default: the checkout)")
    parser.add_argument("--run", type=Path, action="append", required=True)
    parser.add_argument("--multi30k", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/s2s-revisions"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="training steps per measurement")
    parser.add_argument("--single", type=int, default=150, help="sentences decoded one by one")
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.run = [run.resolve() for run in args.run]
    args.multi30k = args.multi30k.resolve()
    args.source = args.workdir / "test_2016_flickr.en"
    subprocess.run(f"gzip -dc {args.multi30k}/test_2016_flickr.en.gz > {args.source}", shell=True)
    repo = Path(__file__).resolve().parent.parent
    sides = []
    for label, revision in (("base", args.base), ("head", args.head)):
        tree = checkout(revision, repo, args.workdir)
        site = args.workdir / f"site_{label}"
        install(tree, site)
        sides.append(Side(label, tree, site, args.threads))
        translate(sides[-1], args, args.run[0], 0)  # builds this revision's kernels
    report = summary(measure(sides, args), args)
    report["revisions"] = {"base": args.base, "head": args.head}
    report["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": args.threads}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
