"""Passkey harness: prompts built exactly, scored right on a model whose answer is known."""

import json
import random

import pytest
import torch
from torch import nn

import moe_edu.experiments.passkey as passkey_cli
from moe_edu import CheckpointError
from moe_edu.experiments.passkey import WordVocab, make_batch, passkey_config
from moe_edu.io.lock import out_lock
from moe_edu.serving.passkey import make_prompt, passkey_grid, random_key, retrieved, spaced

VOCAB = WordVocab.passkey()


class CopyKeyLM(nn.Module):
    """A stub causal LM that knows the task: after 'the pass key is' (the question's), it
    predicts the digits that followed the first 'the pass key is' of the prompt."""

    def __init__(self, vocab: WordVocab, broken_beyond: int | None = None) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.v, self.broken_beyond = vocab, broken_beyond
        self.pattern = vocab.encode("the pass key is")

    def forward(self, ids):
        B, T = ids.shape
        logits = torch.zeros(B, T, len(self.v))
        for b in range(B):
            row = ids[b].tolist()
            starts = [i for i in range(T - 3) if row[i : i + 4] == self.pattern]
            key_at, ask_at = starts[0] + 4, starts[-1] + 4  # first digit of the key / of the answer
            for j in range(ask_at - 1, T):
                n = j - (ask_at - 1)
                target = row[key_at + n] if self.broken_beyond is None or self.broken_beyond > T else 0
                logits[b, j, target] = 1.0
        return logits


def test_prompt_has_exact_length_and_key_at_depth():
    for length in (64, 100, 257):
        for depth in (0.0, 0.5, 1.0):
            p = make_prompt(VOCAB.encode, length=length, depth=depth, key="04219")
            assert len(p.ids) == length
            text = VOCAB.decode(p.ids)
            assert text.count("0 4 2 1 9") == 2 and text.endswith("what is the pass key ? the pass key is")
            assert VOCAB.decode(p.answer) == "0 4 2 1 9"
            assert VOCAB.decode(p.ids[p.key_position : p.key_position + 4]) == "the pass key is"
    early = make_prompt(VOCAB.encode, length=256, depth=0.0, key="1")
    late = make_prompt(VOCAB.encode, length=256, depth=1.0, key="1")
    intro = "there is a pass key hidden in this text . find it and remember it ."
    assert early.key_position == len(VOCAB.encode(intro))
    assert late.key_position > 180


def test_bad_prompts_are_refused():
    with pytest.raises(ValueError, match="too short"):
        make_prompt(VOCAB.encode, length=20, depth=0.5, key="12345")
    with pytest.raises(ValueError, match="depth"):
        make_prompt(VOCAB.encode, length=200, depth=1.5, key="12345")
    with pytest.raises(ValueError, match="digits"):
        spaced("12a45")


def test_a_model_that_copies_gets_everything_and_a_broken_one_nothing():
    grid = passkey_grid(CopyKeyLM(VOCAB), VOCAB.encode, lengths=[64, 128], depths=[0.0, 0.5, 1.0], trials=3)
    assert grid.accuracy.tolist() == [[1.0] * 3] * 2
    broken = passkey_grid(CopyKeyLM(VOCAB, broken_beyond=100), VOCAB.encode, lengths=[64, 128], depths=[0.5], trials=4)
    assert broken.accuracy.tolist() == [[1.0], [0.0]]
    assert len(grid.rows()) == 3


def test_retrieved_needs_every_digit():
    class OffByOne(CopyKeyLM):
        def forward(self, ids):
            logits = super().forward(ids)
            logits[:, -1] = logits[:, -1].roll(1, dims=-1)  # the last digit is wrong
            return logits

    rng = random.Random(0)
    prompts = [make_prompt(VOCAB.encode, length=80, depth=0.3, key=random_key(rng)) for _ in range(3)]
    assert retrieved(CopyKeyLM(VOCAB), prompts) == [True] * 3
    assert retrieved(OffByOne(VOCAB), prompts) == [False] * 3


def test_training_batches_label_only_what_is_asked():
    ids, labels = make_batch(VOCAB, random.Random(0), 2, 80, 5, answer_only=True)
    assert ids.shape == labels.shape == (2, 85)
    assert (labels[:, :80] == -100).all() and torch.equal(labels[:, 80:], ids[:, 80:])
    assert passkey_config(len(VOCAB)).vocab_size == len(VOCAB) == 38


def test_moe_edu_model_runs_in_the_harness():
    from moe_edu import MixtralForCausalLM

    torch.manual_seed(0)
    model = MixtralForCausalLM(passkey_config(len(VOCAB))).eval()
    grid = passkey_grid(model, VOCAB.encode, lengths=[64], depths=[0.0, 1.0], trials=2)
    assert grid.accuracy.shape == (1, 2) and ((grid.accuracy >= 0) & (grid.accuracy <= 1)).all()


def test_distinct_keys():
    rng = random.Random(3)
    keys = [random_key(rng, 5, distinct=True) for _ in range(50)]
    assert all(len(set(k)) == 5 for k in keys)
    with pytest.raises(ValueError, match="distinct"):
        random_key(rng, 11, distinct=True)


@pytest.mark.slow
def test_training_is_reproducible_and_loads(tmp_path):
    from moe_edu.experiments.passkey import load_passkey_model, train

    kwargs = {
        "steps": 3,
        "batch_size": 2,
        "min_len": 64,
        "max_len": 72,
        "digits": 5,
        "lr": 3e-3,
        "seed": 0,
        "progress": False,
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the caller's choice (main's --threads), not the library function's
    try:
        a = train(tmp_path / "a", **kwargs)
        train(tmp_path / "b", **kwargs)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert len(a["log"]) == 3 and a["settings"]["distinct"] is True
    model, vocab = load_passkey_model(tmp_path / "a")
    assert len(vocab) == 38 and model.config.num_hidden_layers == 2
    with pytest.raises(ValueError, match="no passkey checkpoint"):
        load_passkey_model(tmp_path / "missing")


@pytest.mark.slow
def test_a_transformers_model_runs_in_the_harness():
    try:
        from transformers import MixtralForCausalLM as HFMixtral
    except Exception:  # transformers missing or refusing this torch
        pytest.skip("transformers not importable")
    from moe_edu.experiments.passkey import load_passkey_model

    ours, vocab = load_passkey_model()  # the shipped checkpoint: it retrieves most keys at these lengths
    hf = HFMixtral(ours.config.to_hf()).eval()
    missing, unexpected = hf.load_state_dict(ours.hf_state_dict(), strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    kwargs = {"lengths": [64, 96], "depths": [0.0, 0.5, 1.0], "trials": 4, "distinct": True, "seed": 2}
    a = passkey_grid(ours, vocab.encode, **kwargs)
    b = passkey_grid(hf, vocab.encode, **kwargs)
    assert a.accuracy.mean() > 0.5 and torch.equal(a.accuracy, b.accuracy)


PK_FAST = ["--steps", "2", "--batch-size", "2", "--min-len", "64", "--max-len", "72", "--no-progress"]


@pytest.fixture
def no_training(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("training started before the arguments were checked")

    monkeypatch.setattr(passkey_cli, "train", boom)


def pk_usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        passkey_cli.main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "-1"], "--steps: must be an int in [1"),  # used to write an untrained model, then crash
        (["--steps", "0"], "--steps: must be an int in [1"),  # ZeroDivisionError
        (["--min-len", "80", "--max-len", "72"], "max_len (min_len=80"),  # empty range for randrange()
        (["--batch-size", "0"], "--batch-size: must be an int in [1"),
        (["--threads", "0"], "--threads: must be an int in [1"),
        (["--digits", "0"], "--digits: must be an int in [1, 10]"),
        (["--lr", "nan"], "--lr: must be a finite number"),
        (["--min-len", "1000", "--max-len", "1100"], "the context is 1024 tokens"),  # failed at the first long prompt
    ],
)
def test_passkey_arguments_are_usage_errors_before_training(capsys, no_training, tmp_path, argv, message):
    err = pk_usage_error(capsys, [*argv, "--out", str(tmp_path / "pk")])
    assert message in err and "Traceback" not in err


def test_passkey_out_is_checked_up_front_and_never_clobbered(capsys, no_training, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "model.safetensors").write_bytes(b"the shipped model")
    assert "not empty: pass --overwrite" in pk_usage_error(capsys, ["--out", str(used)])
    assert (used / "model.safetensors").read_bytes() == b"the shipped model"
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "is not a directory" in pk_usage_error(capsys, ["--out", str(blocker)])
    assert "cannot be written" in pk_usage_error(capsys, ["--out", str(blocker / "pk")])


@pytest.mark.slow
def test_a_diverging_passkey_run_exits_1_and_saves_nothing(capsys, tmp_path):
    """The old command saved a model whose 21 tensors were all NaN, with exit code 0."""
    out = tmp_path / "pk"
    threads = torch.get_num_threads()
    try:
        code = passkey_cli.main([*PK_FAST[:1], "20", *PK_FAST[2:], "--lr", "1e6", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 1 and "training diverged" in capsys.readouterr().err
    assert not out.exists()


def test_a_second_passkey_run_into_a_locked_out_is_refused(capsys, tmp_path):
    out = tmp_path / "pk"
    threads = torch.get_num_threads()
    try:
        with out_lock(out):  # a first run is still writing
            assert passkey_cli.main([*PK_FAST, "--out", str(out)]) == 1
    finally:
        torch.set_num_threads(threads)
    assert "another run writes into" in capsys.readouterr().err and not out.exists()


def test_the_passkey_loader_is_bounded_and_strict(tmp_path):
    """`load_passkey_model` built the model from config.json first: vocab_size 2e8 asked for 51 GB at once."""
    shipped = passkey_cli.CHECKPOINT
    copy = tmp_path / "pk"
    copy.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.json"):
        (copy / name).write_bytes((shipped / name).read_bytes())
    cfg = json.loads((copy / "config.json").read_text())
    cfg["vocab_size"] = 2 * 10**8
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="vocab_size=200000000"):
        passkey_cli.load_passkey_model(copy)
    (copy / "config.json").write_bytes((shipped / "config.json").read_bytes())
    (copy / "vocab.json").write_text('["a", "a"]')
    with pytest.raises(ValueError, match="distinct words"):
        passkey_cli.load_passkey_model(copy)
