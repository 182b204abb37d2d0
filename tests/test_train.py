"""Training: schedule, data windows, reproducibility, the shipped checkpoint and its recorded command."""

import itertools
import json
import shlex

import pytest
import torch

import moe_edu
from moe_edu.data.corpus import Document
from moe_edu.experiments.train import main
from moe_edu.io.shipped import checkpoint_dir, load_run, load_train_log
from moe_edu.training.config import TrainConfig
from moe_edu.training.data import TokenStreams
from moe_edu.training.loop import lr_at, train_steps
from moe_edu.training.run import train


def test_lr_schedule():
    lrs = [lr_at(s, 100, 1.0, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))  # cosine only decreases (after the warmup)
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_token_streams_are_seeded():
    tok = moe_edu.Tokenizer.train(["abc def ghi"] * 5, vocab_size=280)
    docs = [Document("python", "def f(): pass " * 10, "a"), Document("math", "1 + 1 = 2 " * 10, "b")]
    streams = TokenStreams(docs, tok, {"python": 1.0, "math": 1.0})
    a = streams.sample(4, 16, torch.Generator().manual_seed(0))
    b = streams.sample(4, 16, torch.Generator().manual_seed(0))
    assert a.shape == (4, 16) and torch.equal(a, b)
    with pytest.raises(ValueError, match="positive weight"):
        TokenStreams(docs, tok, {"english": 1.0})


def test_bad_train_config():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="unknown domains"):
        TrainConfig(domain_weights={"poetry": 1.0})


def tiny_model(vocab=64):
    torch.manual_seed(0)
    cfg = moe_edu.PRESETS["tiny"].replace(vocab_size=vocab, num_hidden_layers=1, router_aux_loss_coef=0.01)
    return moe_edu.MixtralForCausalLM(cfg)


def test_train_steps_reproducible_and_learns():
    data = torch.randint(0, 64, (1, 32), generator=torch.Generator().manual_seed(1)).repeat(4, 1)  # (4, 32)
    logs = []
    for _ in range(2):
        model = tiny_model()
        logs.append(train_steps(model, lambda step: data, 15, lr=1e-2, warmup=2, progress=False))
    assert [e["loss"] for e in logs[0]] == [e["loss"] for e in logs[1]]
    assert logs[0][-1]["ce"] < logs[0][0]["ce"] - 1.0  # memorises one repeated sequence
    entry = logs[0][-1]
    assert len(entry["load"]) == 1 and sum(entry["load"][0]) == pytest.approx(1.0, abs=1e-4)
    assert entry["imbalance"] >= 1.0


def test_train_is_reproducible(tmp_path):
    """Same settings and seed: bit-identical weights (one thread, as the recorded command uses)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tc = TrainConfig(steps=2, batch_size=2, seq_len=32, eval_every=1000, eval_batches=1)
        a, _, log_a = train(tc, progress=False)
        b, _, log_b = train(tc, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [e["loss"] for e in log_a["steps"]] == [e["loss"] for e in log_b["steps"]]
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=False):
        assert torch.equal(p, q), name


# ------------------------------------------------------------------ shipped checkpoint
def test_shipped_checkpoint_loads_and_is_small():
    path = checkpoint_dir("tiny")
    assert (path / "model.safetensors").stat().st_size <= 10 * 2**20
    model, tok = moe_edu.load_pretrained()
    cfg = json.loads((path / "config.json").read_text())
    assert model.config.vocab_size == tok.vocab_size == cfg["vocab_size"]
    assert not model.training
    from moe_edu.data.corpus import build_corpus, split_corpus

    held = split_corpus(build_corpus())[1][0].text  # a held-out Python document
    ids = torch.tensor([tok.encode(held)[:128]])  # (1, T)
    with torch.no_grad():
        logits = model(ids).logits  # (1, T, V)
    assert logits.shape == (1, ids.shape[1], tok.vocab_size)
    ce = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    assert float(ce) < 5.0  # a uniform guess scores ln(1024) = 6.93


def test_recorded_command_matches_readme_and_log():
    log = load_train_log()
    readme = (checkpoint_dir("tiny") / "README.md").read_text()
    assert log["command"].startswith("python -m moe_edu.train ") and log["command"] in readme
    assert log["final"]["ce"] < log["steps"][0]["ce"] - 2.0


def test_recorded_command_retrains_a_few_steps(tmp_path):
    """Re-run the shipped command's settings for a few steps through the CLI: the loss falls."""
    args = shlex.split(load_train_log()["command"])[3:]
    for flag in ("--steps", "--out", "--eval-every"):  # keep every other setting of the recorded run
        if flag in args:
            i = args.index(flag)
            del args[i : i + 2]
    threads = torch.get_num_threads()
    try:
        assert main([*args, "--steps", "6", "--eval-every", "1000", "--out", str(tmp_path), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    log = json.loads((tmp_path / "train_log.json").read_text())
    ces = [e["ce"] for e in log["steps"]]
    assert len(ces) == 6 and ces[-1] < ces[0] - 0.3
    assert log["train_config"] == {**load_train_log()["train_config"], "steps": 6, "eval_every": 1000}
    model, _tok = load_run(tmp_path)
    assert model.config.to_dict() == moe_edu.load_pretrained()[0].config.to_dict()


@pytest.mark.gpu
def test_train_on_cuda():
    tc = TrainConfig(steps=3, batch_size=2, seq_len=32, eval_every=1000, eval_batches=1, device="cuda")
    model, _tok, log = train(tc, progress=False)
    assert model.device.type == "cuda" and log["device"].startswith("cuda")
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in log["steps"])
