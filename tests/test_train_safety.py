"""Training runs never lose, mix or clobber data: NaN stops, --out checks, argparse errors, --resume."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import moe_edu
import moe_edu.io.shipped
import moe_edu.training.run as train_mod
from moe_edu.experiments.train import main
from moe_edu.io.shipped import checkpoint_dir, load_train_log
from moe_edu.training.config import TrainConfig
from moe_edu.training.loop import NonFiniteError, make_optimizer, train_steps
from moe_edu.training.run import check_out_dir, train
from moe_edu.training.run_dir import (
    STATE_DIR,
    TrainingStateError,
    dump_json,
    load_training_state,
    merge_readme,
    save_run,
    save_training_state,
)

FAST = ["--steps", "3", "--batch-size", "2", "--seq-len", "16", "--eval-every", "1000", "--no-progress"]


@pytest.fixture
def no_corpus(monkeypatch):
    """Fail the test if the corpus is built (every argument error must come before it)."""

    def boom(*a, **k):
        raise AssertionError("the corpus was built before the arguments were checked")

    monkeypatch.setattr(train_mod, "build_corpus", boom)


def usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seq-len", "1"], "--seq-len: must be an int in [2"),  # one token predicts nothing: NaN loss every step
        (["--lr", "inf"], "--lr: must be a finite number"),
        (["--lr", "-1"], "--lr: must be > 0"),
        (["--steps", "0"], "--steps: must be an int in [1"),
        (["--batch-size", "x"], "--batch-size: invalid literal"),
        (["--preset", "huge"], "invalid choice: 'huge'"),
        (["--vocab-size", "100"], "--vocab-size: must be an int in [259"),
        (["--threads", "0"], "--threads"),
        (["--device", "meta"], "training runs on cpu, cuda or mps"),  # NotImplementedError after the corpus
        (["--seed", str(2**64)], "--seed: must be an int in [0, 9223372036854775807]"),  # raw Overflow error
        (["--preset", "mixtral-8x7b"], "GiB or more, this machine has"),  # allocator errors after 2-145 s
        (["--vocab-size", str(10**7), "--batch-size", "100000"], "GiB or more"),
        (["--seq-len", "100000"], "GiB or more"),
    ],
)
def test_bad_arguments_are_usage_errors_before_the_corpus(capsys, no_corpus, tmp_path, argv, message):
    err = usage_error(capsys, [*argv, "--out", str(tmp_path / "run")])
    assert message in err and "Traceback" not in err


def test_out_is_checked_before_any_work(capsys, no_corpus, tmp_path):
    """A second run into a used --out is refused (unless --overwrite); an unwritable --out too, at once."""
    used = tmp_path / "used"
    used.mkdir()
    (used / "model.safetensors").write_bytes(b"the first run")
    assert "exists and is not empty: pass --overwrite" in usage_error(capsys, ["--out", str(used)])
    assert (used / "model.safetensors").read_bytes() == b"the first run"
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "cannot be written" in usage_error(capsys, ["--out", str(blocker / "run")])
    assert "is not a directory" in usage_error(capsys, ["--out", str(blocker)])
    assert "--resume: no training state" in usage_error(capsys, ["--out", str(used), "--resume"])
    assert check_out_dir(used, overwrite=True) == used and check_out_dir(tmp_path / "new") == tmp_path / "new"


def tiny_model():
    torch.manual_seed(0)
    return moe_edu.MixtralForCausalLM(moe_edu.PRESETS["tiny"].replace(vocab_size=64, num_hidden_layers=1))


def test_train_steps_stops_on_a_non_finite_loss_or_gradient():
    data = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))  # (B, T)
    model = tiny_model()
    with pytest.raises(NonFiniteError, match=r"step \d+: loss .* training diverged"):
        train_steps(model, lambda step: data, 20, lr=1e6, warmup=1, progress=False)
    model = tiny_model()
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    before = model.lm_head.weight.detach().clone()
    with pytest.raises(NonFiniteError, match="step 0"):
        train_steps(model, lambda step: data, 3, grad_clip=0.0, progress=False)
    assert torch.equal(model.lm_head.weight, before)  # stopped before the optimizer step


@pytest.mark.slow
def test_a_diverging_run_exits_non_zero_and_saves_nothing(capsys, tmp_path):
    """The old code ran --lr 1e6 to the end, exited 0 and saved all-NaN weights with bare NaN in the JSON log."""
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        assert main([*FAST, "--lr", "1e6", "--steps", "6", "--out", str(out), "--checkpoint-every", "0"]) == 1
    finally:
        torch.set_num_threads(threads)
    assert "training diverged" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists() and not (out / "train_log.json").exists()


def test_logs_are_valid_json_even_with_non_finite_numbers():
    text = dump_json({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}})
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None}}


def test_rewriting_the_shipped_run_keeps_its_bytes_and_hand_written_readme(tmp_path):
    """`make train` rewrites only the generated README section; the writer reproduces the weights' bytes."""
    shipped = checkpoint_dir("tiny")
    copy = tmp_path / "tiny"
    shutil.copytree(shipped, copy)
    model, tok = moe_edu.load_pretrained()
    save_run(model, tok, load_train_log(), copy)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "train_log.json", "README.md"):
        assert (copy / name).read_bytes() == (shipped / name).read_bytes(), name
    readme = (copy / "README.md").read_text()
    assert "## Checked" in readme and "## Why the aux-loss coefficient is 1.0" in readme
    readme_path = copy / "README.md"
    readme_path.write_text("A note above.\n" + readme.replace("## Checked", "## Checked by hand"))
    merged = merge_readme(readme_path, "NEW SECTION")
    assert merged.startswith("A note above.\n") and "## Checked by hand" in merged and "NEW SECTION" in merged
    assert "final training cross-entropy" not in merged  # the old generated section is gone
    assert merge_readme(copy / "absent.md", "NEW SECTION").count("NEW SECTION") == 1


def run_config(steps=4):
    return TrainConfig(steps=steps, batch_size=2, seq_len=16, eval_every=2, eval_batches=1)


@pytest.mark.slow
def test_resume_gives_the_same_final_weights_as_an_uninterrupted_run(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref, _, ref_log = train(run_config(), tmp_path / "ref", progress=False, checkpoint_every=2)
        assert not (tmp_path / "ref" / STATE_DIR).exists()  # a finished run keeps only its result

        real = train_mod.save_training_state

        def save_then_crash(*args, **kwargs):
            real(*args, **kwargs)
            raise KeyboardInterrupt  # the machine went down right after the step-2 checkpoint

        monkeypatch.setattr(train_mod, "save_training_state", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            train(run_config(), tmp_path / "run", progress=False, checkpoint_every=2)
        monkeypatch.setattr(train_mod, "save_training_state", real)
        assert (tmp_path / "run" / STATE_DIR / "training_state.json").is_file()
        assert not (tmp_path / "run" / "model.safetensors").exists()  # nothing saved as a result
        with pytest.raises(ValueError, match="other settings"):
            train(run_config(steps=5), tmp_path / "run", progress=False, resume=True)
        resumed, _, log = train(run_config(), tmp_path / "run", progress=False, resume=True, checkpoint_every=2)
    finally:
        torch.set_num_threads(threads)
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [e["loss"] for e in log["steps"]] == [e["loss"] for e in ref_log["steps"]]
    assert [e.get("eval_ce") for e in log["steps"]] == [e.get("eval_ce") for e in ref_log["steps"]]
    run, ref_dir = tmp_path / "run", tmp_path / "ref"
    assert (run / "model.safetensors").read_bytes() == (ref_dir / "model.safetensors").read_bytes()


def test_a_run_writer_that_fails_midway_leaves_the_old_run_whole(tmp_path, monkeypatch):
    """The old writer wrote file by file in place: a failure left new weights beside an old log and README."""
    import moe_edu.io.checkpoint as pretrained

    shipped = checkpoint_dir("tiny")
    run = tmp_path / "run"
    shutil.copytree(shipped, run)
    model, tok = moe_edu.load_pretrained()
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)  # a different model
    real = pretrained.save_safetensors

    def write_then_fail(*args, **kwargs):
        real(*args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pretrained, "save_safetensors", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_run(model, tok, load_train_log(), run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary directory left behind
    for name in ("model.safetensors", "config.json", "tokenizer.json", "train_log.json", "README.md"):
        assert (run / name).read_bytes() == (shipped / name).read_bytes(), name


def test_overwrite_replaces_only_the_previous_runs_files(tmp_path):
    """`--overwrite` used to replace --out whole: notes, data and sub-folders beside the run were deleted."""
    run = tmp_path / "run"
    shutil.copytree(checkpoint_dir("tiny"), run)
    (run / "notes.txt").write_text("mine")
    (run / "data").mkdir()
    (run / "data" / "corpus.txt").write_text("also mine")
    (run / STATE_DIR).mkdir()
    (run / STATE_DIR / "training_state.json").write_text("{}")  # a finished run's state is the run's own
    model, tok = moe_edu.load_pretrained()
    save_run(model, tok, load_train_log(), run)
    assert (run / "notes.txt").read_text() == "mine" and (run / "data" / "corpus.txt").read_text() == "also mine"
    assert not (run / STATE_DIR).exists()
    assert moe_edu.io.shipped.load_run(run)[0] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_outs_a_final_swap_could_not_take_are_refused_up_front(capsys, no_corpus, tmp_path, monkeypatch):
    """`.`, a mount point, a dangling symlink, an unwritable folder: refused before the corpus, not after training."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "code.py").write_text("print(1)")
    monkeypatch.chdir(project)
    for out in (".", "", str(project), str(tmp_path)):
        assert "working directory" in usage_error(capsys, ["--out", out, "--overwrite"])
    assert (project / "code.py").read_text() == "print(1)"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert "dangling symbolic link" in usage_error(capsys, ["--out", str(tmp_path / "dangling")])
    mounted = tmp_path / "mnt"
    mounted.mkdir()
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: str(p) == str(mounted) or real_ismount(p))
    assert "mount point" in usage_error(capsys, ["--out", str(mounted)])
    monkeypatch.setattr(os.path, "ismount", real_ismount)
    protected = tmp_path / "protected"
    protected.mkdir()
    real_open = os.open

    def deny(path, *a, **k):  # what an immutable (chattr +i) folder answers, even to root
        if str(path).startswith(str(protected) + os.sep):
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    assert "cannot be written" in usage_error(capsys, ["--out", str(protected), "--overwrite"])
    monkeypatch.setattr(os, "open", real_open)
    linked = tmp_path / "link"
    linked.symlink_to(tmp_path / "target")
    (tmp_path / "target").mkdir()
    assert check_out_dir(linked) == linked  # a link to a folder: the save goes into the folder


def saved_state(path):
    """A real training state after one step of a tiny model (weights, AdamW moments, RNG)."""
    model = tiny_model()
    opt = make_optimizer(model, 1e-3, 0.1)
    data = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))  # (B, T)
    train_steps(model, lambda step: data, 1, optimizer=opt, progress=False)
    rng = {"gen": torch.Generator().get_state(), "torch": torch.get_rng_state()}
    meta = {"step": 0, "train_config": {}, "log": [{"step": 0}], "wall_seconds": 1.0}
    save_training_state(path, model, opt, rng, meta)
    return lambda: (tiny_model(), make_optimizer(tiny_model(), 1e-3, 0.1))


def edit_json(path, change):
    meta = json.loads((path / "training_state.json").read_text())
    (path / "training_state.json").write_text(json.dumps(change(meta)))


def edit_tensors(path, change):
    tensors = load_file(str(path / "training_state.safetensors"))
    save_file(change(tensors), str(path / "training_state.safetensors"))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: (p / "training_state.json").write_text('{"step": 1, "lo'), "cannot read the training state"),
        (lambda p: (p / "training_state.json").write_text("[]"), "must be a JSON object"),
        (lambda p: edit_json(p, lambda m: {k: v for k, v in m.items() if k != "step"}), "step is missing"),
        (lambda p: edit_json(p, lambda m: {k: v for k, v in m.items() if k != "log"}), "log is missing"),
        (lambda p: edit_json(p, lambda m: {**m, "param_groups": None}), "param_groups has an unexpected value"),
        (lambda p: edit_json(p, lambda m: {**m, "step": "3"}), "step has an unexpected value"),
        (lambda p: edit_json(p, lambda m: {**m, "log": [{}, {}, {}]}), "the log has 3 entries for 1 steps"),
        (lambda p: edit_tensors(p, lambda t: {k: v for k, v in t.items() if k != "rng.gen"}), "random-number state"),
        (lambda p: edit_tensors(p, lambda t: {k: v for k, v in t.items() if not k.startswith("optim.")}), "AdamW"),
        (lambda p: edit_tensors(p, lambda t: {k: v for k, v in t.items() if k != "model.lm_head.weight"}), "missing"),
        (lambda p: (p / "training_state.safetensors").write_bytes(b"\x08" + bytes(20)), "cannot read"),
    ],
)
def test_a_damaged_training_state_is_one_clear_error_naming_the_file(tmp_path, corrupt, message):
    """The old loader gave raw JSONDecodeError, AttributeError, KeyError, IndexError, TypeError, or resumed silently."""
    path = tmp_path / STATE_DIR
    fresh = saved_state(path)
    model, opt = fresh()
    load_training_state(path, model, opt)  # the undamaged state loads
    corrupt(path)
    model, opt = fresh()
    with pytest.raises(TrainingStateError, match=message) as err:
        load_training_state(path, model, opt)
    assert str(path) in str(err.value)


def resume_main(argv, monkeypatch, corpus=None):
    if corpus is not None:
        monkeypatch.setattr(train_mod, "build_corpus", corpus)
    threads = torch.get_num_threads()
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_resume_refuses_a_changed_corpus_tokenizer_or_thread_count(tmp_path, monkeypatch, capsys):
    """The old --resume continued silently on another corpus (held-out CE 5.798 vs 5.325) or thread count."""
    out = tmp_path / "run"
    argv = ["--steps", "4", "--batch-size", "2", "--seq-len", "16", "--eval-every", "1000", "--no-progress"]
    argv += ["--checkpoint-every", "2", "--threads", "1", "--out", str(out)]
    real = train_mod.save_training_state

    def save_then_crash(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_training_state", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        resume_main(argv, monkeypatch)
    monkeypatch.setattr(train_mod, "save_training_state", real)
    real_corpus = train_mod.build_corpus

    def other_corpus(seed=0, math_docs=600):
        return [d for d in real_corpus(seed=seed, math_docs=math_docs) if d.domain != "zh-TW"]

    with pytest.raises(SystemExit) as exit_:
        resume_main([*argv, "--resume"], monkeypatch, other_corpus)
    assert exit_.value.code == 2 and "corpus_sha256" in capsys.readouterr().err
    monkeypatch.setattr(train_mod, "build_corpus", real_corpus)
    with pytest.raises(SystemExit) as exit_:
        resume_main([a if a != "1" else "2" for a in argv] + ["--resume"], monkeypatch)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "threads 1 -> 2" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        resume_main([*argv[:1], "5", *argv[2:], "--resume"], monkeypatch)
    assert exit_.value.code == 2 and "other settings (steps)" in capsys.readouterr().err  # was a traceback
    assert not (out / "model.safetensors").exists()
    assert resume_main([*argv, "--resume"], monkeypatch) == 0 and (out / "model.safetensors").exists()


def test_a_fifo_readme_does_not_hang_the_save(tmp_path):
    """`merge_readme` read `<out>/README.md` even when it was a FIFO: the end of the run hung."""
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "README.md")
    model, tok = moe_edu.load_pretrained()
    save_run(model, tok, load_train_log(), run)
    assert (run / "README.md").is_file() and "Tiny Mixtral" in (run / "README.md").read_text()


@pytest.mark.slow
def test_a_full_disk_is_one_clear_error(tmp_path, monkeypatch, capsys):
    """ENOSPC at a periodic checkpoint was a raw traceback."""

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_mod, "save_training_state", full)
    threads = torch.get_num_threads()
    try:
        code = main([*FAST, "--steps", "4", "--checkpoint-every", "2", "--out", str(tmp_path / "run")])
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and "--resume continues" in err and "Traceback" not in err
