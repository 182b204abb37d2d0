"""The fast dispatch paths: grouped GEMM (portable loop + backward), decode, counts without host syncs, the bench."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from moe_edu import MixtralConfig, SparseMoeBlock, dispatch
from moe_edu.grouped_mm import grouped_matmul

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    """`benchmarks/cpu_dispatch.py` (what `make bench` runs), imported by path when a test asks for it."""
    spec = importlib.util.spec_from_file_location("cpu_dispatch", ROOT / "benchmarks" / "cpu_dispatch.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


CONFIG = MixtralConfig(
    hidden_size=24,
    intermediate_size=40,
    num_attention_heads=2,
    num_key_value_heads=1,
    num_local_experts=6,
    num_experts_per_tok=2,
)


def per_group(x, w, counts):
    return torch.cat([xg @ w[g] for g, xg in enumerate(x.split(counts.tolist()))])


@pytest.mark.parametrize("counts", [[3, 0, 4, 1], [0, 0, 0, 8], [0, 0, 0, 0], [2, 2, 2, 2]])
def test_grouped_matmul_matches_per_group_values_and_grads(counts):
    torch.manual_seed(0)
    counts = torch.tensor(counts)
    x = torch.randn(int(counts.sum()), 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    got = grouped_matmul(x, w, counts)
    assert got.shape == (x.shape[0], 3)
    if x.shape[0]:
        torch.testing.assert_close(got, per_group(x, w, counts))
        assert torch.autograd.gradcheck(lambda x, w: grouped_matmul(x, w, counts), (x, w))
    got.sum().backward()
    unused = counts == 0
    assert (w.grad[unused] == 0).all()  # an expert nobody chose gets a zero gradient, not garbage


def test_grouped_matmul_rejects_bad_shapes():
    with pytest.raises(ValueError, match="w \\(G, K, M\\)"):
        grouped_matmul(torch.randn(4, 5), torch.randn(2, 6, 3), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="counts sum to 3"):
        grouped_matmul(torch.randn(4, 5), torch.randn(2, 5, 3), torch.tensor([2, 1]))


def test_sort_by_expert_counts_equal_bincount():
    chosen = torch.randint(0, 6, (37, 2))
    order, counts = dispatch.sort_by_expert(chosen, 6)
    assert torch.equal(counts, torch.bincount(chosen.reshape(-1), minlength=6))
    assert torch.equal(chosen.reshape(-1)[order], chosen.reshape(-1).sort(stable=True).values)


@pytest.mark.parametrize("tokens", [1, 2, 17])
@pytest.mark.parametrize("name", ["grouped", "decode"])
def test_fast_paths_equal_loop_with_grads(name, tokens):
    torch.manual_seed(tokens)
    ref = SparseMoeBlock(CONFIG, dispatch="loop").double()
    fast = SparseMoeBlock(CONFIG, dispatch=name).double()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, tokens, CONFIG.hidden_size, dtype=torch.float64, requires_grad=True)
    outs = []
    for block in (ref, fast):
        y, _ = block(x)
        grads = torch.autograd.grad((y * y).sum(), [x, *block.parameters()])
        outs.append((y, grads))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=1e-12)
    for a, b in zip(outs[1][1], outs[0][1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_grouped_hands_few_tokens_to_decode_on_cpu(monkeypatch):
    calls = []
    real = dispatch.decode_dispatch
    monkeypatch.setattr(dispatch, "decode_dispatch", lambda *a: calls.append(1) or real(*a))
    block = SparseMoeBlock(CONFIG)
    most = dispatch.DECODE_MAX_ASSIGNMENTS // CONFIG.num_experts_per_tok  # tokens whose T*k still decodes
    with torch.no_grad():
        block(torch.randn(1, 1, CONFIG.hidden_size))
        block(torch.randn(1, most, CONFIG.hidden_size))
        assert calls == [1, 1]
        block(torch.randn(1, most + 1, CONFIG.hidden_size))
        assert calls == [1, 1]  # more assignments: sort + grouped GEMMs
    block(torch.randn(1, 1, CONFIG.hidden_size))
    assert calls == [1, 1]  # training: the grouped backward is cheaper than indexing weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens", [1, 2, 5, 8, 17])
def test_decode_inference_equals_loop(tokens, dtype):
    """The no-grad decode (assignments grouped on the host, addmm_ with the weight as alpha) = the loop reference."""
    torch.manual_seed(tokens)
    block = SparseMoeBlock(CONFIG).to(dtype).eval()
    x = torch.randn(tokens, CONFIG.hidden_size).to(dtype)
    with torch.no_grad():
        r = block.gate(x)
        want = dispatch.loop_dispatch(x, block.experts, r.weights, r.expert_ids)
        got = dispatch.decode_dispatch(x, block.experts, r.weights, r.expert_ids)
        y, _ = block(x[None])  # the default block: decode while T*k <= DECODE_MAX_ASSIGNMENTS, then grouped
    assert got.dtype == dtype and (r.expert_ids.unique().numel() < tokens * 2 or tokens < 4)  # experts repeat
    tol = {"atol": 1e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(y[0], want, **tol)


def test_grouped_is_deterministic_and_keeps_dtype():
    block = SparseMoeBlock(CONFIG).to(torch.bfloat16)
    x = torch.randn(3, 9, CONFIG.hidden_size, dtype=torch.bfloat16)
    y1, y2 = block(x)[0], block(x)[0]
    assert y1.dtype == torch.bfloat16 and torch.equal(y1, y2)


@pytest.mark.parametrize("backward", [False, True])
def test_bench_writes_table_json_and_plot(bench, tmp_path, monkeypatch, backward):
    monkeypatch.setattr(bench, "CASES", (bench.Case(16, 32, 1), bench.Case(16, 32, 8)))
    (tmp_path / "notes.md").write_text("mine")
    argv = ["--rounds", "2", "--out", str(tmp_path)] + (["--backward"] if backward else [])
    results = bench.main(argv)
    assert len(results) == 2 and all({"ideal", "floor", "ours", "hf_eager"} <= set(r.ms) for r in results)
    stem = "cpu_dispatch_backward" if backward else "cpu_dispatch"
    table = (tmp_path / f"{stem}.md").read_text()
    assert table.count("| H=16, I=32, T=") == 2 and "ours/floor (target)" in table and "(≤1.1)" in table
    data = json.loads((tmp_path / f"{stem}.json").read_text())
    assert [r["tokens"] for r in data["results"]] == [1, 8] and data["results"][0]["backward"] is backward
    assert (tmp_path / f"{stem}.png").stat().st_size > 1000
    assert (tmp_path / "notes.md").read_text() == "mine"  # the results are swapped in; nothing else is touched


def test_bench_rejects_bad_arguments_and_outs_before_timing(bench, tmp_path, monkeypatch, capsys):
    """`--cases 99` failed after timing the earlier cases, `--cases -1` ran the last one, a bad --out failed at the end."""

    def no_timing(*a, **k):
        raise AssertionError("timed before the arguments were checked")

    monkeypatch.setattr(bench, "time_case", no_timing)
    (tmp_path / "cpu_dispatch.json").write_text("{}")  # an earlier run's results
    (tmp_path / "a_file").write_text("")
    for argv, message in [
        (["--rounds", "0"], "--rounds: must be an int in [1"),
        (["--threads", "0"], "--threads: must be an int in [1"),
        (["--cases", "99"], "--cases: an index into CASES"),
        (["--cases", "-1"], "--cases: an index into CASES"),
        (["--out", str(tmp_path / "a_file")], "is not a directory"),
        (["--out", str(tmp_path)], "already holds cpu_dispatch.json: pass --overwrite"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            bench.main((["--out", str(tmp_path / "new")] if "--out" not in argv else []) + argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err, argv
    assert (tmp_path / "cpu_dispatch.json").read_text() == "{}"


def test_cpu_grouped_kernel_is_chosen_only_where_it_applies():
    from moe_edu.grouped_mm import grouped_mm_kernel_available

    w = torch.randn(4, 16, 24)  # torch >= 2.13 (pyproject) has the CPU kernel
    assert grouped_mm_kernel_available(torch.randn(5, 16), w)  # fp32, 64- and 96-byte rows
    assert not grouped_mm_kernel_available(torch.randn(5, 16).double(), w.double())  # no fp64 kernel
    assert not grouped_mm_kernel_available(torch.randn(5, 6), torch.randn(4, 6, 24))  # 24-byte rows


def test_fp32_training_path_matches_loop():
    torch.manual_seed(1)
    ref = SparseMoeBlock(CONFIG, dispatch="loop")  # H=24, I=40: the CPU grouped kernel applies
    fast = SparseMoeBlock(CONFIG)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(3, 11, CONFIG.hidden_size, requires_grad=True)
    grads = []
    for block in (ref, fast):
        y, _ = block(x)
        grads.append(torch.autograd.grad((y * y).sum(), [x, *block.parameters()]))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [3, 256])
def test_inference_blocks_without_kernel_match_loop(chunk):
    torch.manual_seed(2)
    block = SparseMoeBlock(CONFIG).double()  # fp64: no grouped kernel, so the per-expert blocks run
    x = torch.randn(40, CONFIG.hidden_size, dtype=torch.float64)
    with torch.no_grad():
        routing = block.gate(x)
        weights, chosen = routing.weights, routing.expert_ids
        order, counts = dispatch.sort_by_expert(chosen, CONFIG.num_local_experts)
        xs = x[order // 2]
        got = block.experts._grouped_inference(xs, counts.tolist(), chunk=chunk)
        want = torch.cat([block.experts.expert(e, g) for e, g in enumerate(xs.split(counts.tolist()))])
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(block(x[None])[0][0], dispatch.loop_dispatch(x, block.experts, weights, chosen))
