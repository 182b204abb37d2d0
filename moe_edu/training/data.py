"""Training data: a BPE tokenizer learnt on a domain-balanced sample, and per-domain token streams.

`moe_edu.train` builds both from the corpus (`moe_edu.data.corpus`); notebook 07 and
`moe_edu.experiments.adapting` sample their batches from `TokenStreams` too. Windows are drawn with a
`torch.Generator`, so a seeded run sees the same batches every time.
"""

from __future__ import annotations

import torch

from ..data.corpus import Document, by_domain
from ..tokenizer import Tokenizer

__all__ = ["TokenStreams", "train_tokenizer"]


def train_tokenizer(docs: list[Document], vocab_size: int, chars_per_domain: int = 60_000) -> Tokenizer:
    """BPE on a domain-balanced sample: up to `chars_per_domain` per domain, small domains repeated."""
    texts: list[str] = []
    for domain_docs in by_domain(docs).values():
        n = 0
        for doc in domain_docs:
            if n >= chars_per_domain:
                break
            texts.append(doc.text)
            n += len(doc.text)
        while n < chars_per_domain // 2:  # repeat the small language pages so they get merges too
            for doc in domain_docs:
                texts.append(doc.text)
                n += len(doc.text)
    return Tokenizer.train(texts, vocab_size)


class TokenStreams:
    """Per-domain token streams (documents joined by `</s>`) and seeded random windows over them."""

    def __init__(self, docs: list[Document], tokenizer: Tokenizer, weights: dict[str, float]) -> None:
        groups = by_domain(docs)
        self.domains = [d for d in groups if weights.get(d, 0) > 0]
        if not self.domains:
            raise ValueError("no domain with a positive weight has documents")
        self.streams = {}
        for d in self.domains:
            ids: list[int] = []
            for doc in groups[d]:
                ids += [*tokenizer.encode(doc.text), tokenizer.eos_id]
            self.streams[d] = torch.tensor(ids, dtype=torch.long)
        self.weights = torch.tensor([float(weights[d]) for d in self.domains])

    def sample(self, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        """(batch_size, seq_len) windows; each row's domain drawn with the domain weights."""
        picks = torch.multinomial(self.weights, batch_size, replacement=True, generator=generator)  # (B,)
        rows = []
        for p in picks.tolist():
            stream = self.streams[self.domains[p]]
            if len(stream) <= seq_len:
                stream = stream.repeat(seq_len // len(stream) + 2)
            start = int(torch.randint(len(stream) - seq_len, (1,), generator=generator))
            rows.append(stream[start : start + seq_len])
        return torch.stack(rows)  # (B, T)
