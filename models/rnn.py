"""Recurrent sequence classifiers: token embedding -> multi-layer LSTM or GRU -> Linear on the last hidden state.

tokens: (B, N) int64 in [0, vocab_size) -> logits (B, num_classes). The recurrence is sequential in N, so these
models measure per-step launch overhead in a way that convolutions and attention do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from archbench.models._layers import make_divisible
from archbench.models._registry import InputSpec, register_model


@dataclass(frozen=True)
class RNNConfig:
    cell: str = "lstm"  # "lstm" (4 gates: 4H(I+H) MACs per step) or "gru" (3 gates: 3H(I+H))
    vocab_size: int = 1000  # token ids in [0, vocab_size)
    embed_dim: int = 64  # embedding width before `width` scaling
    hidden: int = 128  # recurrent state width H before `width` scaling
    depth: int = 1  # stacked recurrent layers
    seq_len: int = 64  # tokens in the example input
    num_classes: int = 10  # output logits
    width: float = 1.0  # multiplier on embed_dim and hidden, each rounded to a multiple of 8
    fused: bool = False  # accepted for a uniform CLI; no fused kernel applies (cuDNN fuses the cell anyway)

    def __post_init__(self) -> None:
        if self.cell not in ("lstm", "gru"):
            raise ValueError(f"unknown RNN cell {self.cell!r}; known: lstm, gru")
        if self.depth < 1:
            raise ValueError(f"RNN depth must be >= 1, got {self.depth}")


class RNNClassifier(nn.Module):
    """tokens (B, N) int64 -> logits (B, num_classes)."""

    def __init__(self, cfg: RNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        embed_dim = make_divisible(cfg.embed_dim * cfg.width)
        hidden = make_divisible(cfg.hidden * cfg.width)
        rnn_cls = nn.LSTM if cfg.cell == "lstm" else nn.GRU
        self.embed = nn.Embedding(cfg.vocab_size, embed_dim)
        self.rnn = rnn_cls(embed_dim, hidden, num_layers=cfg.depth, batch_first=True)
        self.head = nn.Linear(hidden, cfg.num_classes)
        self.input_spec = InputSpec((1, cfg.seq_len), torch.int64, high=cfg.vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: (B, N) int64 -> logits (B, num_classes)."""
        out, _ = self.rnn(self.embed(tokens))  # (B, N, H): top layer's hidden state at every step
        return self.head(out[:, -1])  # last step of the top layer == h_n[-1]


@register_model
def lstm_s(width: float = 1.0, depth: int = 1, seq_len: int = 64, vocab_size: int = 1000,
           num_classes: int = 10, fused: bool = False) -> RNNClassifier:
    """LSTM small: embed 64, hidden 128, 1 layer, 64 tokens."""
    return RNNClassifier(RNNConfig(cell="lstm", vocab_size=vocab_size, embed_dim=64, hidden=128, depth=depth,
                                   seq_len=seq_len, num_classes=num_classes, width=width, fused=fused))


@register_model
def gru_s(width: float = 1.0, depth: int = 1, seq_len: int = 64, vocab_size: int = 1000,
          num_classes: int = 10, fused: bool = False) -> RNNClassifier:
    """GRU small: embed 64, hidden 128, 1 layer, 64 tokens."""
    return RNNClassifier(RNNConfig(cell="gru", vocab_size=vocab_size, embed_dim=64, hidden=128, depth=depth,
                                   seq_len=seq_len, num_classes=num_classes, width=width, fused=fused))
