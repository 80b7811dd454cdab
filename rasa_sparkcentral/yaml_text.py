"""Add to a YAML file as text, so that every byte the user wrote stays where it was.

A round-trip parser (ruamel.yaml) keeps comments but re-indents lists and re-wraps long
lines; appending text keeps the file exactly as it was, with our lines after it. Only
block-style top-level keys are edited (what Rasa's own files use); anything else raises
:class:`YamlEditError` with a message saying what to add by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

_TOP_KEY = re.compile(r"""^(?P<key>"[^"]*"|'[^']*'|[^\s#'"\-][^:#]*?)\s*:(?P<rest>.*)$""")

#: Renders one item of a block at the given indent.
ItemRenderer = Callable[[str], List[str]]


class YamlEditError(ValueError):
    """The file's layout is one we do not edit; the message says what to add by hand."""


@dataclass
class _Block:
    key_line: int
    #: index just after the block's last content line
    end: int
    #: the indent of the block's children ("" for a list written at column 0), or None
    child_indent: Optional[str]
    inline: str


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _find_block(lines: List[str], key: str) -> Optional[_Block]:
    for index, line in enumerate(lines):
        match = _TOP_KEY.match(line)
        if match is None or match.group("key").strip("'\"") != key:
            continue
        end = index + 1
        child_indent: Optional[str] = None
        cursor = index + 1
        while cursor < len(lines):
            text = lines[cursor]
            if _content(text):
                indent = text[: len(text) - len(text.lstrip(" "))]
                if not indent and not text.startswith("- "):
                    break  # the next top-level key
                if child_indent is None:
                    child_indent = indent
                end = cursor + 1
            elif text.strip() and text.startswith(" ") and end == cursor:
                end = cursor + 1  # an indented comment that continues the block
            cursor += 1
        rest = match.group("rest").split(" #", 1)[0].strip()
        return _Block(index, end, child_indent, rest)
    return None


def has_key(text: str, key: str) -> bool:
    return _find_block(text.splitlines(), key) is not None


def add_items(
    text: str,
    key: str,
    items: Sequence[ItemRenderer],
    *,
    blank_line_between: bool,
    where: str,
) -> str:
    """Append rendered items to the top-level ``key`` (made at the end when missing)."""
    if not items:
        return text
    lines = text.splitlines()
    block = _find_block(lines, key)
    if block is None:
        rendered = [f"{key}:"]
        for number, render in enumerate(items):
            if blank_line_between and number:
                rendered.append("")
            rendered.extend(render("  "))
        return append_lines(text, rendered)
    if block.inline and block.inline not in ("null", "~"):
        raise YamlEditError(
            f"{where}: '{key}' is written on one line; add its items by hand "
            "(or rewrite it as a block list/mapping and run init again)"
        )
    indent = block.child_indent if block.child_indent is not None else "  "
    rendered = []
    for render in items:
        if blank_line_between:
            rendered.append("")
        rendered.extend(render(indent))
    new_lines = lines[: block.end] + rendered + lines[block.end :]
    newline = _newline(text)
    return newline.join(new_lines) + newline


def append_lines(text: str, new_lines: Union[List[str], Tuple[str, ...]]) -> str:
    """``text`` with a blank line and ``new_lines`` after it (newline at the end)."""
    newline = _newline(text)
    body = text if not text or text.endswith("\n") else text + newline
    separator = newline if body.strip() else ""
    if body and not body.strip():
        body = ""
    return body + separator + newline.join(new_lines) + newline


def _newline(text: str) -> str:
    """The file's line ending (Windows editors write CRLF)."""
    return "\r\n" if "\r\n" in text else "\n"
