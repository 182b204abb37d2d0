"""One Chinese name per concept, across the glossary and the zh-TW boxes and recaps of notebooks 00-12.

A course notebook opens with a zh-TW summary box (`> **中文導讀**`) and closes with a two-line zh-TW recap
(`> **中文回顧**`, its own markdown cell just before `## Recap`). Their Chinese must use the glossary's
preferred form of every concept it names:
- a term glossed with English, `分派（dispatch）`, names a glossary concept and is written in its preferred form;
- another name of a glossary concept (a seed wording, an alias) appears only as a gloss right after the preferred
  form, `路由網路（門控網路）`;
- the known non-preferred variants below (`閘控`, `前 k 名`, `稀疏升級` ...) never appear.
"""

import re
from pathlib import Path

import pytest

from moe_edu.course.glossary import GLOSSARY, SYSTEMS_USAGE, TAIWAN_USAGE, Term
from moe_edu.course.widgets.explorer import PRESET_TEXTS, SCRIPT_TEXTS

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COURSE = [f"{n:02d}" for n in range(13)]
BOX, RECAP = "# > **中文導讀**", "# > **中文回顧**"

# Names of one concept that a reader meets but the course does not write, with the form it writes.
KNOWN_VARIANTS = {
    "閘控": "門控",
    "門控網絡": "路由網路",
    "前 k 名": "前 k 個",
    "前 1 名": "前 1 個",
    "前 2 名": "前 2 個",
    "top-k": "前 k 個",
    "稀疏升級": "稀疏升級再造",
    "路由 z-loss": "路由 z 損失",
    "z-loss": "z 損失",
    "專家混合": "混合專家",
    "負載均衡": "負載平衡",
    "偏誤": "偏見",
}
# English names that mean one concept: no two glossary rows may take names from the same group.
SYNONYMS = [
    {"router", "router network", "gating network", "gate"},
    {"load-balancing loss", "auxiliary loss", "aux loss", "balance loss"},
    {"expert pruning", "pruning"},
    {"expert merging", "merging"},
    {"kv cache", "key-value cache"},
    {"sparse upcycling", "upcycling"},
    {"forgetting", "catastrophic forgetting"},
    {"gate weights", "routing weights", "gating weights"},
    {"token dropping", "dropping"},
]
# A gloss is a parenthesis whose first part is lower-case English: 分派（dispatch）, 無丟棄（dropless，...）.
GLOSS = re.compile(r"（([a-z][a-z -]*[a-z])(?=[，、）])")


def english_names(english: str) -> set[str]:
    """The English names of a row: 'router network (router, gating network)' -> three names."""
    return {n.strip().lower() for n in re.split(r"[(),/]", english) if n.strip()}


def zh_block(number: str, marker: str) -> str:
    """The text of a notebook's zh-TW box or recap: the `# >` lines from the marker on, joined."""
    (path,) = NOTEBOOKS.glob(f"{number}_*.py")
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(marker)]
    assert len(starts) == 1, f"{path.name}: {len(starts)} cells start with {marker!r}"
    block = []
    for line in lines[starts[0] :]:
        if not line.startswith("# >"):
            break
        block.append(line[3:].strip())
    return "".join(block)


def scan(text: str) -> list[tuple[int, str]]:
    """Every glossary name and known variant in `text`, longest match first, left to right: (position, name)."""
    names = sorted({n for t in GLOSSARY for n in t.names} | set(KNOWN_VARIANTS), key=len, reverse=True)
    found, i = [], 0
    while i < len(text):
        hit = next((n for n in names if text.startswith(n, i)), None)
        if hit:
            found.append((i, hit))
            i += len(hit)
        else:
            i += 1
    return found


def term_problems(text: str) -> list[str]:
    """What in a zh-TW block breaks "one term per concept"; [] when nothing does."""
    problems = []
    rows = {n: t for t in GLOSSARY for n in t.names}
    for gloss in GLOSS.finditer(text):  # a concept named with its English: glossary row, preferred form
        english = gloss.group(1)
        pattern = re.compile(rf"\b{re.escape(english)}s?\b")
        matches = [t for t in GLOSSARY if any(pattern.search(n) for n in english_names(t.english))]
        before = text[: gloss.start()]
        if not matches:
            problems.append(f"{before[-8:]}（{english}）: {english!r} is no glossary concept")
        elif not any(before.endswith(t.preferred) for t in matches):
            want = " / ".join(t.preferred for t in matches)
            problems.append(f"{before[-8:]}（{english}）: the glossary writes {want}")
    plain = GLOSS.sub(lambda m: "（" + " " * len(m.group(1)), text)  # English glosses are not Chinese terms
    for i, name in scan(plain):
        if name in KNOWN_VARIANTS:
            problems.append(f"{name}: write {KNOWN_VARIANTS[name]}")
            continue
        row = rows[name]
        if name != row.preferred and not plain[:i].endswith(row.preferred + "（"):
            problems.append(f"{name}: the glossary's preferred form is {row.preferred}")
    return problems


def row_problems(glossary) -> list[str]:
    """Rows that give one concept two Chinese names: a shared Chinese name, English name, or English synonym."""
    problems = []
    zh = [n for t in glossary for n in t.names]
    problems += [f"{n}: in several rows" for n in sorted({n for n in zh if zh.count(n) > 1})]
    owners: dict[str, str] = {}
    for t in glossary:
        for name in english_names(t.english):
            if name in owners:
                problems.append(f"{t.zh} and {owners[name]} both mean {name!r}")
            owners[name] = t.zh
    for group in SYNONYMS:
        rows = sorted({owners[n] for n in group if n in owners})
        if len(rows) > 1:
            problems.append(f"one concept, several rows: {rows}")
    return problems


def test_no_concept_has_two_rows():
    assert row_problems(GLOSSARY) == []
    # the glossary before the review's Z11: the seed's 路由網絡 and a 門控網絡 row, both the router
    old = [Term("路由網絡", "router network", "gate", "01", "-"), Term("門控網絡", "gating network", "gate", "01", "-")]
    assert row_problems(old) == ["one concept, several rows: ['路由網絡', '門控網絡']"]
    assert row_problems([*old[:1], Term("路由器", "router network", "gate", "01", "-")]) == [
        "路由器 and 路由網絡 both mean 'router network'",
    ]


def test_variants_are_not_glossary_names():
    names = {n for t in GLOSSARY for n in t.names}
    assert not names & set(KNOWN_VARIANTS)
    for t in GLOSSARY:
        assert t.preferred in t.names and (not t.taiwan or t.taiwan != t.zh), t.zh


def test_checker_catches_what_it_should():
    """The checker flags each kind of problem, and passes the good forms."""
    assert term_problems("Mixtral 的路由網路（門控網路）只是一個線性層；分派（dispatch）很便宜。") == []
    assert term_problems("把專家卸載（offloading）到 CPU 記憶體，並做預取（prefetch）。") == []
    assert term_problems("新的路由器") == ["路由器: the glossary's preferred form is 路由網路"]
    assert term_problems("門控網路") == ["門控網路: the glossary's preferred form is 路由網路"]
    assert term_problems("稀疏激活") == ["稀疏激活: the glossary's preferred form is 稀疏啟用"]
    assert term_problems("雜訊前 k 名閘控") == ["前 k 名: write 前 k 個", "閘控: write 門控"]
    assert term_problems("稀疏升級（sparse upcycling）") == [
        "稀疏升級（sparse upcycling）: the glossary writes 稀疏升級再造",
        "稀疏升級: write 稀疏升級再造",
    ]
    assert term_problems("稀疏升級再造（sparse upcycling）") == []
    assert term_problems("快取與預取（offloading）") == ["快取與預取（offloading）: the glossary writes 卸載"]
    assert term_problems("只取決於 logit 的差（sigmoid）") == [
        "logit 的差（sigmoid）: 'sigmoid' is no glossary concept"
    ]


@pytest.mark.parametrize("marker", [BOX, RECAP], ids=["box", "recap"])
@pytest.mark.parametrize("number", COURSE)
def test_one_term_per_concept(number, marker):
    assert term_problems(zh_block(number, marker)) == [], f"notebook {number}"


@pytest.mark.parametrize("number", COURSE)
def test_recap_mirrors_the_box(number):
    """A two-line recap in its own markdown cell right before ## Recap, in Taiwan usage, naming no concept
    that the box does not name."""
    (path,) = NOTEBOOKS.glob(f"{number}_*.py")
    lines = path.read_text(encoding="utf-8").splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith(RECAP)]
    cell = lines[start:]
    cell = cell[: cell.index("")]
    assert lines[start - 1] == "# %% [markdown]" and lines[start + len(cell) + 1 :][:2] == [
        "# %% [markdown]",
        "# ## Recap",
    ]
    assert len(cell) == 2 and all(line.startswith("# > ") for line in cell), path.name
    recap, box = zh_block(number, RECAP), zh_block(number, BOX)
    for usage in TAIWAN_USAGE + SYSTEMS_USAGE:
        assert usage.mainland not in recap, f"{path.name}: Mainland form {usage.mainland!r}, write {usage.taiwan!r}"
    assert 1 <= len(re.findall(r"[。！？]", recap)) <= 3, path.name
    in_box = {name for _, name in scan(box)}
    missing = {name for _, name in scan(recap)} - in_box
    assert not missing, f"{path.name}: the recap names {sorted(missing)}, the box does not"


def test_widget_texts_use_the_glossary_terms():
    """The explorer's Chinese preset texts name concepts as the boxes do."""
    for name, text in {**PRESET_TEXTS, **SCRIPT_TEXTS}.items():
        assert term_problems(text) == [], name
