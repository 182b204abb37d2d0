"""The zh-TW <-> English <-> code glossary used by notebook 00, and the notebooks' zh-TW summary boxes."""

import importlib
import re
from pathlib import Path

import pytest

import moe_edu
from moe_edu.course.glossary import GLOSSARY, TAIWAN_USAGE, glossary_table, term

SEED_TERMS = ["專家", "路由網絡", "門控網絡", "稀疏激活", "加權輸出", "加權融合", "前 k 個專家"]
# The terms of notebooks 05-12 (issue 12's list), in Taiwan usage.
LATER_TERMS = [
    "負載平衡損失",
    "容量因子",
    "丟棄 / 無丟棄",
    "專家選擇路由",
    "共享專家",
    "細粒度專家",
    "專家平行",
    "全對全通訊",
    "鍵值快取",
    "量化",
    "卸載",
    "稀疏升級",
    "剪枝",
    "合併",
]
# Mainland forms beyond the seed's that a Taiwan reader would not write (Taiwan form in the comment).
OTHER_MAINLAND = ["進程", "字節", "內存", "帶寬", "並行", "歸一化", "設備", "批量", "掩碼", "通信"]
# 行程, 位元組, 記憶體, 頻寬, 平行, 正規化, 裝置, 批次, 遮罩, 通訊
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
        assert usage.seed != usage.taiwan and usage.english and usage.example
        for t in GLOSSARY:
            if usage.seed in t.zh:
                assert t.zh in seed_rows and usage.taiwan in t.taiwan, (t.zh, usage.seed)
            assert usage.seed not in t.taiwan, (t.taiwan, usage.seed)
    assert term("活動參數").taiwan == "啟用參數" and term("路由網絡").taiwan == "路由網路"


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
    for usage in TAIWAN_USAGE:
        assert usage.seed not in box, f"{path.name}: Mainland form {usage.seed!r}, write {usage.taiwan!r}"
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
