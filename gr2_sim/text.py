"""Instruction text -> token ids -> one embedding per instruction. Built in: no downloads, no vocabulary file.

Words are lower-cased alphanumeric runs, hashed (CRC-32, stable across runs and machines) into
``vocab_size - 1`` buckets; id 0 is padding. The empty instruction is all padding, which the encoder
maps to a learned *null* embedding: the same embedding used for non-robot video and for instructions
dropped during training (classifier-free style).

    tokens = tokenize(["Pick up the red cube", ""], max_len=16)   # (2, 16) long; row 1 all zeros
    emb = TextEncoder(vocab_size=2048, lang_dim=64, max_len=16)(tokens)   # (2, 64)
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import torch
import torch.nn as nn

from gr2_sim.errors import UserError

PAD_ID = 0
DEFAULT_VOCAB_SIZE = 2048  # 2047 word buckets: a few hundred distinct words rarely collide

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words: ``"Pick up the RED cube!"`` -> ``["pick", "up", "the", "red", "cube"]``."""
    return _WORD.findall(text.lower())


def word_id(word: str, vocab_size: int = DEFAULT_VOCAB_SIZE) -> int:
    """Stable bucket of one word, in [1, vocab_size)."""
    return 1 + zlib.crc32(word.encode("utf-8")) % (vocab_size - 1)


def tokenize(texts: Sequence[str], max_len: int, vocab_size: int = DEFAULT_VOCAB_SIZE) -> torch.Tensor:
    """Token ids (B, max_len) long, padded with 0 on the right and truncated to ``max_len`` words.

    ``vocab_size`` must match the encoder's (``ModelConfig.vocab_size``); ``TextEncoder.tokenize`` does that.
    """
    if isinstance(texts, str):
        raise UserError(f"tokenize expects a list of instructions, got the string {texts!r}; wrap it: [text]")
    if max_len < 1 or vocab_size < 2:
        raise UserError(f"tokenize needs max_len >= 1 and vocab_size >= 2, got {max_len=} {vocab_size=}")
    ids = torch.full((len(texts), max_len), PAD_ID, dtype=torch.long)
    for row, text in enumerate(texts):
        row_ids = [word_id(w, vocab_size) for w in words(text)[:max_len]]
        ids[row, : len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
    return ids


def bigram_ids(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, L) word ids -> (B, L) ids of (word i, word i+1) in [1, vocab_size); 0 where either is padding."""
    nxt = torch.cat([tokens[:, 1:], torch.zeros_like(tokens[:, :1])], dim=1)
    ids = 1 + (tokens * 1_000_003 + nxt * 7919) % (vocab_size - 1)  # a fixed mixing of the two ids
    return torch.where((tokens == PAD_ID) | (nxt == PAD_ID), torch.zeros_like(ids), ids)


class TextEncoder(nn.Module):
    """Token ids (B, L) -> instruction embedding (B, lang_dim).

    Embedding + learned positions, ``n_layers`` pre-norm transformer layers (0 = bag of words), then the mean
    over non-padding tokens. All-padding rows (empty instruction) and dropped rows get the learned null
    embedding.

    ``bigrams``: each word also gets the embedding of the pair (this word, next word), hashed into
    ``vocab_size`` buckets of a second table. A mean over words loses which color goes with which noun:
    "put the red cube in the blue bowl" and "put the blue cube in the red bowl" pool to nearly the same
    vector unless attention learns to bind them, and on PickPlace it had not after 3000 steps (the policy
    ignored the instruction; docs/results.md). The pairs "red cube" and "blue bowl" carry the binding from
    the first step.
    """

    def __init__(self, vocab_size: int, lang_dim: int, max_len: int, n_layers: int = 1,
                 bigrams: bool = False) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, lang_dim, padding_idx=PAD_ID)
        self.pos = nn.Parameter(torch.zeros(max_len, lang_dim))
        self.bigram_embed = nn.Embedding(vocab_size, lang_dim, padding_idx=PAD_ID) if bigrams else None
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                lang_dim, nhead=1, dim_feedforward=2 * lang_dim, dropout=0.0, activation="gelu",
                batch_first=True, norm_first=True,
            )  # fmt: skip
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(lang_dim)
        self.null = nn.Parameter(torch.zeros(lang_dim))

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids (B, max_len) with this encoder's vocabulary size, on its device."""
        return tokenize(texts, self.max_len, self.vocab_size).to(self.null.device)

    def forward(self, tokens: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        """tokens: (B, L) long with L <= max_len; drop_prob: chance per row of using the null embedding."""
        if tokens.dim() != 2 or tokens.shape[1] > self.max_len:
            raise UserError(f"text tokens must be (B, L<={self.max_len}), got shape {tuple(tokens.shape)}")
        # checked where it costs nothing: on a GPU it would stall the host every step (an embedding lookup out of
        # range fails there anyway, less clearly)
        if tokens.numel() and tokens.device.type == "cpu" and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise UserError(
                f"token ids span [{int(tokens.min())}, {int(tokens.max())}] but vocab_size={self.vocab_size}; "
                f"tokenize with vocab_size={self.vocab_size} (TextEncoder.tokenize does)"
            )
        pad = tokens == PAD_ID  # (B, L)
        empty = pad.all(dim=1)  # (B,)
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]  # (B, L, lang_dim)
        if self.bigram_embed is not None:
            x = x + self.bigram_embed(bigram_ids(tokens, self.vocab_size))
        # Unmask one key of empty rows so their attention is defined (no NaNs); their output is replaced below.
        key_pad = pad.clone()
        key_pad[:, 0] &= ~empty
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=key_pad)
        keep = (~pad).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        pooled = self.norm((x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0))  # (B, lang_dim)
        use_null = empty
        if drop_prob > 0:
            use_null = use_null | (torch.rand(tokens.shape[0], device=tokens.device) < drop_prob)
        return torch.where(use_null.unsqueeze(-1), self.null.expand_as(pooled), pooled)
