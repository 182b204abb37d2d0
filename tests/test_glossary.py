"""The zh-TW <-> English <-> code glossary used by notebook 00."""

import pytest

import moe_edu
from moe_edu.glossary import GLOSSARY, glossary_table, term

SEED_TERMS = ["專家", "路由網絡", "門控網絡", "稀疏激活", "加權輸出", "加權融合", "前 k 個專家"]


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


def test_term_lookup_and_error():
    assert term("稀疏激活").english == "sparse activation"
    with pytest.raises(KeyError, match="not in the glossary"):
        term("不存在")


def test_table_renders_html_markdown_and_text():
    table = glossary_table(["專家", "稀疏激活"])
    html = table._repr_html_()
    assert html.count("<tr>") == 3 and "稀疏激活" in html and "<code>" in html
    md = table.to_markdown()
    assert md.count("\n") == 3 and "| 專家 | expert |" in md
    assert repr(table).splitlines()[1].startswith("稀疏激活 | sparse activation")
    assert len(glossary_table().rows()) == len(GLOSSARY)


def test_html_escapes():
    from moe_edu.glossary import GlossaryTable, Term

    html = GlossaryTable([Term("<a>", "b & c", "d", "00", "e")])._repr_html_()
    assert "&lt;a&gt;" in html and "b &amp; c" in html


def test_empty_table_raises():
    from moe_edu.glossary import GlossaryTable

    with pytest.raises(ValueError, match="at least one term"):
        GlossaryTable([])
