"""The zh-TW <-> English <-> code glossary used by notebook 00, and the notebooks' zh-TW summary boxes."""

import importlib
import re
from pathlib import Path

import pytest

import moe_edu
from moe_edu.course.glossary import GLOSSARY, SYSTEMS_USAGE, TAIWAN_USAGE, glossary_table, term

# The seed glosses both "Router Network" and "Gating Network" as 路由網絡; it never writes 門控網絡.
SEED_TERMS = ["專家", "路由網絡", "稀疏激活", "加權輸出", "加權融合", "前 k 個專家"]
# The terms of notebooks 01-12 the seed does not use (issue 12's list, the review's G2 and G5), in Taiwan usage.
LATER_TERMS = [
    "負載平衡損失",
    "容量因子",
    "丟棄",
    "無丟棄",
    "專家選擇路由",
    "共享專家",
    "細粒度專家",
    "專家平行",
    "全對全通訊",
    "鍵值快取",
    "量化",
    "卸載",
    "稀疏升級再造",
    "專家剪枝",
    "專家合併",
    "重新正規化",
    "分派",
    "殘差連接",
    "預取",
    "局部性",
    "分組查詢注意力",
    "軟性混合專家",
    "遺忘",
    "監督式微調",
    "直接偏好最佳化",
    "溫度",
    "熵",
]
ALIASES = {
    "門控網路": "路由網絡",
    "路由器": "路由網絡",
    "KV 快取": "鍵值快取",
    "災難性遺忘": "遺忘",
    "Soft MoE": "軟性混合專家",
}
# Mainland forms beyond the seed's and SYSTEMS_USAGE that a Taiwan reader would not write (Taiwan form in the comment).
OTHER_MAINLAND = ["字節", "設備", "掩碼", "數據", "網絡"]
# 位元組, 裝置, 遮罩, 資料, 網路
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COURSE = [f"{n:02d}" for n in range(13)]  # course notebooks 00-12


def test_seed_terms_are_present():
    zh = {t.zh for t in GLOSSARY}
    for word in SEED_TERMS:
        assert word in zh, word


def test_rows_are_complete_and_unique():
    assert len({t.zh for t in GLOSSARY}) == len(GLOSSARY)
    for t in GLOSSARY:
        assert t.zh and t.english and t.code and t.notebook and t.meaning


def test_code_names_exist_in_library():
    for name in ("SparseMoeBlock", "TopKRouter", "Experts", "softmax_topk", "count_parameters", "flops_per_token"):
        assert any(name in t.code for t in GLOSSARY), name
        assert hasattr(moe_edu, name)


def test_later_notebooks_terms_are_present():
    zh = {t.zh for t in GLOSSARY}
    for word in LATER_TERMS:
        assert word in zh, word


def test_dotted_code_references_resolve():
    """Every `moe_edu.module.name` in the code column names a real module attribute."""
    refs = [r for t in GLOSSARY for r in re.findall(r"moe_edu(?:\.\w+)+", t.code)]
    assert len(refs) >= 20
    for ref in refs:
        parts = ref.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        assert obj is not None, ref


def test_seed_mainland_forms_have_taiwan_forms():
    """A seed row written with a Mainland form carries the Taiwan form; the course's own rows use none."""
    seed_rows = set(SEED_TERMS) | {"活動參數"}
    for usage in TAIWAN_USAGE:
        assert usage.mainland != usage.taiwan and usage.english and usage.example
        for t in GLOSSARY:
            if usage.mainland in t.zh:
                assert t.zh in seed_rows and usage.taiwan in t.taiwan, (t.zh, usage.mainland)
            for name in (t.taiwan, *t.aliases):
                assert usage.mainland not in name, (name, usage.mainland)
    assert term("活動參數").taiwan == "啟用參數" and term("路由網絡").taiwan == "路由網路"


def test_systems_usage_pairs():
    """G6: the systems words of Mainland MoE material, each with its Taiwan form; the glossary uses none."""
    assert len(SYSTEMS_USAGE) >= 14
    for usage in SYSTEMS_USAGE:
        assert usage.mainland not in usage.taiwan and usage.english and "→" in usage.example
        assert usage.example.split("→")[1].count(usage.taiwan.split("（")[0]) + usage.example.count("GPU 記憶體") >= 1
        for t in GLOSSARY:
            assert all(usage.mainland not in name for name in t.names), (t.zh, usage.mainland)


def test_aliases_find_their_row():
    for alias, row in ALIASES.items():
        assert term(alias) is term(row) and alias in term(row).aliases
    assert term("路由網路").english.startswith("router network") and "gating network" in term("路由網路").english


def _summary_box(source: str) -> str:
    """The zh-TW summary: the markdown blockquote that starts with **中文導讀**."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# > **中文導讀**"))
    box = []
    for line in lines[start:]:
        if not line.startswith("# >"):
            break
        box.append(line[3:].strip())
    return "".join(box)


@pytest.mark.parametrize("number", COURSE)
def test_course_notebook_has_a_taiwan_usage_summary(number):
    (path,) = NOTEBOOKS.glob(f"{number}_*.py")
    box = _summary_box(path.read_text(encoding="utf-8"))
    sentences = len(re.findall(r"[。！？]", box))
    assert 3 <= sentences <= 5, f"{path.name}: {sentences} sentences"
    for usage in TAIWAN_USAGE + SYSTEMS_USAGE:
        assert usage.mainland not in box, f"{path.name}: Mainland form {usage.mainland!r}, write {usage.taiwan!r}"
    for word in OTHER_MAINLAND:
        assert word not in box, f"{path.name}: Mainland form {word!r}"


@pytest.mark.parametrize("number", COURSE)
def test_every_question_has_an_answer(number):
    """Each "check your understanding" question is followed by its <details> answer block."""
    (path,) = NOTEBOOKS.glob(f"{number}_*.py")
    text = path.read_text(encoding="utf-8")
    section = text.split("# ## Check your understanding", 1)[1].split("# ## Exercises", 1)[0]
    questions = re.findall(r"^# \d+\. ", section, flags=re.M)
    answers = re.findall(r"^# <details><summary>Answer</summary>$", section, flags=re.M)
    assert len(questions) >= 3 and len(answers) == len(questions) == section.count("# </details>"), path.name


def test_term_lookup_and_error():
    assert term("稀疏激活").english == "sparse activation"
    assert term("稀疏啟用") is term("稀疏激活")  # the Taiwan form finds the seed's row
    with pytest.raises(KeyError, match="not in the glossary"):
        term("不存在")


def test_table_renders_html_markdown_and_text():
    table = glossary_table(["專家", "稀疏激活"])
    html = table._repr_html_()
    assert html.count("<tr>") == 3 and "稀疏激活" in html and "<code>" in html
    md = table.to_markdown()
    assert md.count("\n") == 3 and "| 專家 | expert |" in md and "| 稀疏啟用 |" in md
    assert glossary_table(["路由網絡"]).to_markdown().endswith("| 路由網路 | 門控網路、路由器 |")
    assert repr(table).splitlines()[1].startswith("稀疏激活 | sparse activation")
    assert len(glossary_table().rows()) == len(GLOSSARY)


def test_html_escapes():
    from moe_edu.course.glossary import GlossaryTable, Term

    html = GlossaryTable([Term("<a>", "b & c", "d", "00", "e")])._repr_html_()
    assert "&lt;a&gt;" in html and "b &amp; c" in html


def test_empty_table_raises():
    from moe_edu.course.glossary import GlossaryTable

    with pytest.raises(ValueError, match="at least one term"):
        GlossaryTable([])
