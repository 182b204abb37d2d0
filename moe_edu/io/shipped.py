"""The tiny Mixtral shipped inside the package, trained by `moe_edu.train` on the offline corpus.

    model, tokenizer = moe_edu.load_pretrained()

No network: the weights (`model.safetensors`, fp32, ~6 MB), `config.json`, `tokenizer.json`
and `train_log.json` live in `moe_edu/checkpoints/tiny/`, whose README.md records the exact
command that reproduces them. Notebooks 07 and 08 read it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..tokenizer import Tokenizer
from .checkpoint import from_pretrained

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def checkpoint_dir(name: str = "tiny") -> Path:
    path = CHECKPOINTS / name
    if not (path / "model.safetensors").is_file():
        available = sorted(p.name for p in CHECKPOINTS.glob("*") if (p / "model.safetensors").is_file())
        raise ValueError(f"no shipped checkpoint {name!r}; available: {available}")
    return path


def load_run(path: str | Path, device: str | torch.device = "cpu"):
    """(model, tokenizer) from a directory written by `moe_edu.train`.

    Read by the one strict loader (`pretrained.from_pretrained`): every weight must match the
    config, whose layer and expert counts are first checked against the stored tensors.
    """
    path = Path(path)
    model, tokenizer = from_pretrained(path, device=device), Tokenizer.from_file(path / "tokenizer.json")
    if tokenizer.vocab_size > model.config.vocab_size:  # ids the embedding has no row for: fails only in forward
        raise ValueError(
            f"{path / 'tokenizer.json'} has {tokenizer.vocab_size} tokens, but config.json's vocab_size is "
            f"{model.config.vocab_size}"
        )
    return model, tokenizer


def load_pretrained(name: str = "tiny", device: str | torch.device = "cpu"):
    """The shipped checkpoint as `(model, tokenizer)`; the model is in eval mode."""
    return load_run(checkpoint_dir(name), device)


def load_train_log(name: str = "tiny") -> dict:
    """The shipped checkpoint's training log: settings, command, per-step losses and expert load."""
    return json.loads((checkpoint_dir(name) / "train_log.json").read_text())
