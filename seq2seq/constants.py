"""Fixed values every part of the toolkit shares: the special token ids (Sockeye's order) and
the name of every file of a run directory (the run-directory contract; docs/checkpoints.md).

    run_dir/
      config.yaml               CONFIG: the resolved config (rebuilds the model)
      meta.json                 META: format version, package/torch versions, tokenizer SHA-256
      tokenizer.json            TOKENIZER_MANIFEST: the tokenizer's files and their hashes
      spm.model                 JOINT_SPM (or spm.src.model and spm.tgt.model: side_spm)
      model.safetensors         WEIGHTS: weights of the last checkpoint
      model.best.safetensors    BEST_WEIGHTS: weights of the best validation score
      model.avg.safetensors     AVERAGE_WEIGHTS: written by seq2seq-average
      train_state.pt            TRAIN_STATE: optimizer, scheduler, sampler, RNG states, counters
      data/                     PREPARED_DATA: the training corpus prepared into shards
      checkpoints/step_N/       CHECKPOINTS: the last `train.keep_last` checkpoints
      metrics.jsonl             METRICS: one JSON object per log or validation line
      train.log                 TRAIN_LOG: the training's log
      tensorboard/              TENSORBOARD: the same metrics for TensorBoard
      results.json              RESULTS: scores written by seq2seq-evaluate
      hyp.<name>.txt            hypotheses_file(name): translations seq2seq-evaluate scored
      training_curves.png       TRAINING_CURVES: drawn by seq2seq-plot
      .lock                     LOCK: locked by the training that writes the run (holds its PID)
"""

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3

CONFIG = "config.yaml"
META = "meta.json"
TOKENIZER_MANIFEST = "tokenizer.json"
JOINT_SPM = "spm.model"
WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "model.best.safetensors"
AVERAGE_WEIGHTS = "model.avg.safetensors"
TRAIN_STATE = "train_state.pt"
CHECKPOINTS = "checkpoints"
PREPARED_DATA = "data"
METRICS = "metrics.jsonl"
TRAIN_LOG = "train.log"
TENSORBOARD = "tensorboard"
RESULTS = "results.json"
TRAINING_CURVES = "training_curves.png"
LOCK = ".lock"


def side_spm(side: str) -> str:
    """The SentencePiece model of one side (src or tgt) of a run with separate tokenizers."""
    return f"spm.{side}.model"


def hypotheses_file(name: str) -> str:
    """Where seq2seq-evaluate writes the translations it scored for the test set `name`."""
    return f"hyp.{name}.txt"
