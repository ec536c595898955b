"""What a search needs of a model: the decoding contract, as typing protocols.

`seq2seq.search` decodes with any model and cache that have these members: `Transformer` and
its `DecoderCache`, or a test's scripted double. A type checker proves that each matches.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from torch import Tensor, nn

from seq2seq.cache import Attend


class DecodingCache(Protocol):
    """The decoder state of a batch of rows, one per hypothesis (`DecoderCache`)."""

    attend: Attend | None  # a faster attention the search hands to the model (or None)

    def reorder(self, index: Tensor, group_size: int | None = None) -> None:
        """Keep rows `index` (1-D, long) in that order; the new rows come in groups of
        `group_size` (default: unchanged) that share one source."""
        ...


class PositionLimit(Protocol):
    @property
    def max_positions(self) -> int:
        """Positions the model can encode: bos and every output token must fit."""
        ...


CacheT = TypeVar("CacheT", bound=DecodingCache)  # the cache type of one model


class Seq2SeqModel(Protocol[CacheT]):
    """An encoder-decoder that decodes one position at a time (`Transformer`)."""

    @property
    def cfg(self) -> PositionLimit: ...

    @property
    def output_projection(self) -> nn.Module:
        """Decoder states (rows, d_model) -> logits (rows, vocab); its weight is
        (vocab, d_model)."""
        ...

    def encode(self, src: Tensor, src_pad_mask: Tensor) -> Tensor:
        """src: (batch, src_len) ids, src_pad_mask True at padding -> memory (batch, src_len,
        d_model)."""
        ...

    def init_cache(self, memory: Tensor, src_pad_mask: Tensor) -> CacheT:
        """The state for decoding the batch of `memory`, one row per sentence."""
        ...

    def decode_step(self, tokens: Tensor, cache: CacheT, project: bool = True) -> Tensor:
        """Consume the newest token of each row, (rows,) ids: the logits (rows, vocab) for the
        next position, or with `project=False` the decoder states (rows, d_model)."""
        ...
