"""Local checkpoints written by transformers' save_pretrained: lazy loading, one block alone, saving, errors."""

import json

import pytest
import torch

import moe_edu
import moe_edu.io.checkpoint as pretrained
from moe_edu import CheckpointError, MixtralConfig, MixtralForCausalLM, StateDictError, load_moe_block

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

CFG = MixtralConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_local_experts=4,
    num_experts_per_tok=2,
    max_position_embeddings=32,
    rope_theta=1e4,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A sharded checkpoint written by transformers itself, and the model that wrote it."""
    torch.manual_seed(0)
    hf = transformers.MixtralForCausalLM(CFG.to_hf()).eval()
    path = tmp_path_factory.mktemp("mixtral")
    hf.save_pretrained(path, max_shard_size="20KB")
    return path, hf


def index_of(path):
    return json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]


class Spy:
    """Wraps safetensors.safe_open and records every file opened and every tensor read."""

    def __init__(self, monkeypatch):
        self.opened, self.read = [], []
        real = pretrained.safe_open
        spy = self

        class Handle:
            def __init__(self, filename, framework):
                spy.opened.append(filename.rsplit("/", 1)[-1])
                self.inner = real(filename, framework=framework)

            def __enter__(self):
                self.inner.__enter__()
                return self

            def __exit__(self, *exc):
                return self.inner.__exit__(*exc)

            def keys(self):
                return self.inner.keys()

            def get_slice(self, key):
                return self.inner.get_slice(key)

            def get_tensor(self, key):
                spy.read.append(key)
                return self.inner.get_tensor(key)

        monkeypatch.setattr(pretrained, "safe_open", Handle)


def ids():
    return torch.randint(0, CFG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))  # (B, T)


def test_checkpoint_is_sharded_with_an_index(checkpoint):
    path, _ = checkpoint
    assert len(set(index_of(path).values())) > 3
    assert any(".block_sparse_moe.experts.0.w1.weight" in k for k in index_of(path))  # what transformers writes


def test_from_pretrained_equals_transformers(checkpoint, monkeypatch):
    path, hf = checkpoint
    spy = Spy(monkeypatch)
    model = moe_edu.from_pretrained(path)
    assert sorted(spy.read) == sorted(index_of(path))  # every stored tensor read exactly once
    assert not any(p.is_meta for p in model.parameters()) and not model.training
    assert model.config == CFG
    with torch.no_grad():
        err = (model(ids()).logits - hf(input_ids=ids()).logits).abs().max().item()
    assert err <= 1e-4
    assert moe_edu.from_pretrained(path, dtype=torch.bfloat16).lm_head.weight.dtype == torch.bfloat16


def test_one_layer_block_reads_nothing_else(checkpoint, monkeypatch):
    path, hf = checkpoint
    layer = 1
    prefix = f"model.layers.{layer}.block_sparse_moe."
    spy = Spy(monkeypatch)
    block = load_moe_block(path, layer)
    wanted = {k for k in index_of(path) if k.startswith(prefix)}
    assert set(spy.read) == wanted and len(spy.read) == len(wanted) == 1 + 3 * CFG.num_local_experts
    assert set(spy.opened) == {index_of(path)[k] for k in wanted}  # only the shards holding this layer
    x = torch.randn(2, 5, CFG.hidden_size)  # (B, T, H)
    with torch.no_grad():
        y, logits = block(x)
        assert (y - hf.model.layers[layer].mlp(x)).abs().max().item() <= 1e-5
        assert (logits - hf.model.layers[layer].mlp.gate(x)[0]).abs().max().item() <= 1e-6
    with pytest.raises(ValueError, match="num_hidden_layers=3"):
        load_moe_block(path, 3)


def test_first_layers_only(checkpoint, monkeypatch):
    path, hf = checkpoint
    spy = Spy(monkeypatch)
    model = moe_edu.from_pretrained(path, num_hidden_layers=1)
    assert model.config.num_hidden_layers == 1 and len(model.model.layers) == 1
    assert spy.read and not any(k.startswith(("model.layers.1.", "model.layers.2.")) for k in spy.read)
    with torch.no_grad():
        mine = model(ids(), output_router_logits=True).router_logits
        theirs = hf(input_ids=ids(), output_router_logits=True).router_logits
    assert len(mine) == 1 and (mine[0] - theirs[0]).abs().max().item() <= 1e-5  # layer 0 routes real text alike
    with pytest.raises(ValueError, match="num_hidden_layers"):
        moe_edu.from_pretrained(path, num_hidden_layers=4)


def test_save_pretrained_is_loaded_by_transformers(checkpoint, tmp_path):
    path, hf = checkpoint
    ours = moe_edu.from_pretrained(path)
    out = tmp_path / "ours"
    moe_edu.save_pretrained(ours, out, max_shard_size=30_000)
    assert (out / "model.safetensors.index.json").is_file()
    theirs = transformers.MixtralForCausalLM.from_pretrained(out).eval()
    again = moe_edu.from_pretrained(out)
    with torch.no_grad():
        ref = hf(input_ids=ids()).logits
        assert torch.equal(theirs(input_ids=ids()).logits, ref)
        assert (again(ids()).logits - ref).abs().max().item() <= 1e-4
    single = moe_edu.save_pretrained(ours, tmp_path / "single")
    assert (single / "model.safetensors").is_file() and not (single / "model.safetensors.index.json").exists()
    assert torch.equal(moe_edu.from_pretrained(single).lm_head.weight, ours.lm_head.weight)


def test_tied_embeddings_round_trip(tmp_path):
    cfg = CFG.replace(tie_word_embeddings=True)
    model = MixtralForCausalLM(cfg)
    moe_edu.save_pretrained(model, tmp_path)
    loaded = moe_edu.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def copy_checkpoint(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_corrupted_and_missing_files_name_the_file(checkpoint, tmp_path):
    path, _ = checkpoint
    bad = copy_checkpoint(path, tmp_path / "bad")
    shard = index_of(bad)["model.layers.2.block_sparse_moe.gate.weight"]
    (bad / shard).write_bytes(b"\x00garbage, not a safetensors header")
    with pytest.raises(CheckpointError, match=shard):
        load_moe_block(bad, 2)
    load_moe_block(bad, 0)  # other layers' shards are untouched, and are all it reads
    data = (path / shard).read_bytes()
    (bad / shard).write_bytes(data[: len(data) - 100])  # truncated
    with pytest.raises(CheckpointError, match=shard):
        moe_edu.from_pretrained(bad)
    (bad / shard).unlink()
    with pytest.raises(CheckpointError, match=f"lists shard {shard}"):
        moe_edu.from_pretrained(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        moe_edu.from_pretrained(tmp_path / "nowhere")
    (bad / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config.json"):
        moe_edu.from_pretrained(bad)


def test_missing_key_and_wrong_shape_are_listed(checkpoint, tmp_path):
    path, _ = checkpoint
    bad = copy_checkpoint(path, tmp_path / "bad")
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.0.self_attn.k_proj.weight"]
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(StateDictError, match=r"model.layers.0.self_attn.k_proj.weight"):
        moe_edu.from_pretrained(bad)
    shard = index["weight_map"].pop("model.layers.1.block_sparse_moe.experts.2.w3.weight")
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(StateDictError) as err:
        load_moe_block(bad, 1)
    assert "model.layers.1.block_sparse_moe.experts.2.w3.weight" in str(err.value)  # the hole is named
    index["weight_map"]["model.layers.1.block_sparse_moe.experts.2.w3.weight"] = shard
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    config = json.loads((bad / "config.json").read_text())
    config["intermediate_size"] = 40
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(StateDictError, match=r"experts.gate_up_proj: expected shape \(4, 80, 32\), got \(4, 96, 32\)"):
        load_moe_block(bad, 1)
