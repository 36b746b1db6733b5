"""The documentation: the generated configuration reference is up to date, every relative link
in the README and the docs points to a file of the repository, and the text names no file that
lives outside it. (`make test` also builds the site with `mkdocs build --strict`.)"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
REFERENCE = DOCS / "guides" / "config-reference.md"


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_the_config_reference_is_up_to_date():
    from nudiff.config_reference import markdown_reference

    assert REFERENCE.is_file(), f"{_rel(REFERENCE)} is missing"
    assert REFERENCE.read_text() == markdown_reference(), (
        f"{_rel(REFERENCE)} is out of date with the config models; regenerate it from the "
        "repository root with: python -m nudiff.config_reference --write"
    )


def test_every_config_key_has_a_description():
    from nudiff.config_reference import undocumented_keys, unused_descriptions

    assert not undocumented_keys(), (
        "config keys without a description: give the field a Field(description=...) or add it "
        f"to nudiff.config_reference.DESCRIPTIONS: {undocumented_keys()}"
    )
    assert not unused_descriptions(), (
        "nudiff.config_reference.DESCRIPTIONS entries for no key (or for a field that has its "
        f"own description): {unused_descriptions()}"
    )


# [text](target) and ![alt](target), with an optional "title"; <a href>, <img src>; and
# reference definitions "[label]: target"
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")
_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (links there are not links)."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _links(text: str) -> list[str]:
    prose = _prose(text)
    return [*_INLINE.findall(prose), *_HTML.findall(prose), *_DEFINITION.findall(prose)]


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)) or target.startswith("//")


def test_the_docs_have_pages_and_links():
    assert (DOCS / "index.md").is_file()
    assert len(PAGES) > 10
    assert sum(len(_links(p.read_text())) for p in PAGES) > 50


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_points_to_a_file_in_the_repository(page):
    broken = []
    for target in _links(page.read_text()):
        if _is_external(target):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not path:  # a link to an anchor of the same page
            continue
        resolved = (page.parent / path).resolve()
        inside = resolved == ROOT or ROOT in resolved.parents
        if not inside or not resolved.exists():
            broken.append(target)
    assert not broken, f"{_rel(page)}: links to files that are not in the repository: {broken}"


# paths of files that live beside the repository, not in it
_OUTSIDE = re.compile(r"research/|\.\./shared|seeds/")


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_the_docs_name_no_file_outside_the_repository(page):
    hits = [
        f"line {i}: {line.strip()}"
        for i, line in enumerate(page.read_text().splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert not hits, (
        f"{_rel(page)} names files outside the repository (research/, ../shared, seeds/):\n"
        + "\n".join(hits)
    )
