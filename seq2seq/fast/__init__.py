"""Speed-ups: code that computes what the readable code computes, faster.

The paper's code (`seq2seq.layers`, `seq2seq.model`, `seq2seq.cache`) is the reference, and
the tests pin each speed-up to it. What the layers use comes from this package's top level,
the one place where they meet:

- `Dropout` (`dropout.py`): the paper's dropout with cheaper random masks on CPU.
- `autocast_off` (`autocast.py`): a region without autocast, entered only when autocast is on.

The rest is used by decoding, outside the layers:

- `kernels.py` (C++ in `csrc/`): top-k and cached-decoding attention kernels for CPU; the
  search hands the attention to the layers through `DecoderCache.attend`.
- `inference.py`: the inference copy of a model, linear layers prepared once in bf16/fp16.
- `workers.py`: several batches decoded at once, one thread each.

And by training: `attention_backend.py`, the attention implementation on CPU.
"""

from seq2seq.fast.autocast import autocast_off
from seq2seq.fast.dropout import Dropout

__all__ = ["Dropout", "autocast_off"]
