"""A training run's directory: weights, config, tokenizer, log and a README with the exact command.

`moe_edu.train` writes one per run; the shipped checkpoint (`moe_edu/checkpoints/tiny/`) is one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .tokenizer import Tokenizer


def save_run(model, tokenizer: Tokenizer, log: dict, out_dir: str | Path) -> None:
    """model.safetensors (fp32), config.json, tokenizer.json, train_log.json."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt", "producer": "moe_edu.train"})
    config = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", **model.config.to_dict()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save(out / "tokenizer.json")
    (out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    write_readme(out, log)


def write_readme(out_dir: str | Path, log: dict) -> None:
    """README.md for a run directory: what it is, the exact command, the numbers, the licences."""
    f, tc, mc = log["final"], log["train_config"], log["model_config"]
    text = f"""# Tiny Mixtral trained by `moe_edu.train`

{mc['num_hidden_layers']} layers, {mc['num_local_experts']} experts, top-{mc['num_experts_per_tok']}, \
hidden {mc['hidden_size']}, vocabulary {mc['vocab_size']} (byte-level BPE): {log['parameters']:,} parameters, fp32.

Load it with `model, tokenizer = moe_edu.load_pretrained()`; notebook 07 plots this log,
notebook 08 analyses the routing.

## Reproduce

```
{log['command']}
```

Seeded: the same command with the same Python ({log['python']}: the corpus reads its standard
library), torch ({log['torch']}) and thread count ({log['threads']}) gives the same weights.

## Result

- {tc['steps']} steps of {tc['batch_size']} x {tc['seq_len']} tokens, AdamW (lr {tc['lr']}, warmup + cosine), \
aux-loss coefficient {tc['aux_loss_coef']}, z-loss coefficient {tc['z_loss_coef']}
- final training cross-entropy {f['ce']:.3f}, held-out cross-entropy {f.get('eval_ce', float('nan')):.3f} \
(uniform guess: {math.log(mc['vocab_size']):.3f})
- wall time {log['wall_seconds']:.0f} s on {log['device']} with {log['threads']} thread(s) \
(on a shared 2-core machine; corpus and tokenizer included)

## Data and licences

Trained on `moe_edu.data.corpus`: Python code and docstrings from the interpreter's standard
library (© Python Software Foundation, PSF License Agreement; read at training time, not
redistributed here), generated arithmetic, and French/German/Spanish/Italian pages written for
this project (Apache-2.0, `moe_edu/data/*.txt`). The weights and tokenizer are released with
`moe_edu` under Apache-2.0.
"""
    (Path(out_dir) / "README.md").write_text(text)
