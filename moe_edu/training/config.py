"""The settings of a training run: one validated dataclass, stored in `train_log.json`.

Its own module (not `train.py`) so that the package root can export it without importing the
`python -m moe_edu.train` entry point before runpy executes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import MixtralConfig
from ..data.corpus import DOMAINS
from ..presets import PRESETS, get_config
from ..validation import (
    int_in_range,
    nonnegative_float,
    nonnegative_int,
    one_of,
    positive_float,
    positive_int,
    probability,
)

DEFAULT_WEIGHTS = {
    "python": 0.3,
    "english": 0.3,
    "math": 0.2,
    "french": 0.05,
    "german": 0.05,
    "spanish": 0.05,
    "italian": 0.05,
    "zh-TW": 0.05,
}


@dataclass
class TrainConfig:
    """Every setting of a run; stored in `train_log.json` so a run can be repeated."""

    preset: str = "tiny"
    vocab_size: int = 1024
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 300
    lr: float = 5e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_frac: float = 0.05
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    aux_loss_coef: float = 1.0  # router_aux_loss_coef; small values leave the hard load skewed (see the README)
    z_loss_coef: float = 0.001  # router_z_loss_coef of the model's config
    eval_every: int = 50
    eval_batches: int = 4
    seed: int = 0
    device: str = "auto"
    domain_weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def __post_init__(self) -> None:
        f = "TrainConfig."
        one_of(f + "preset", self.preset, PRESETS)
        int_in_range(f + "vocab_size", self.vocab_size, 259, None)  # 256 bytes + 3 special tokens
        int_in_range(f + "seq_len", self.seq_len, 2, None)  # one token predicts nothing: the loss would be NaN
        for name in ("batch_size", "steps", "eval_every", "eval_batches"):
            positive_int(f + name, getattr(self, name))
        nonnegative_int(f + "seed", self.seed)
        positive_float(f + "lr", self.lr)
        for name in ("min_lr_ratio", "warmup_frac"):
            probability(f + name, getattr(self, name))
        for name in ("weight_decay", "grad_clip", "aux_loss_coef", "z_loss_coef"):
            nonnegative_float(f + name, getattr(self, name))
        unknown = sorted(set(self.domain_weights) - set(DOMAINS))
        if unknown:
            raise ValueError(f"TrainConfig.domain_weights has unknown domains {unknown}; expected {DOMAINS}")
        for d, w in self.domain_weights.items():
            nonnegative_float(f"TrainConfig.domain_weights[{d!r}]", w)

    def model_config(self) -> MixtralConfig:
        return get_config(self.preset).replace(
            vocab_size=self.vocab_size,
            max_position_embeddings=max(self.seq_len, 256),
            router_aux_loss_coef=self.aux_loss_coef,
            router_z_loss_coef=self.z_loss_coef,
        )
