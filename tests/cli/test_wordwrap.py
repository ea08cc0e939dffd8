"""The chat's word wrap, checked on what a terminal shows: the escape sequences it writes are carried out by a
small screen model (cursor left, erase to the end of the line, new line), then every line is measured."""
from __future__ import annotations

import io
import random
import re

from hypura.wordwrap import MARGIN, WordWrap, cell_width


def screen(stream: str) -> list[str]:
    """The lines a terminal shows for `stream` (only the sequences WordWrap writes)."""
    lines, col = [[]], 0
    for m in re.finditer(r"\x1b\[(\d*)([DK])|\n|.", stream, re.S):
        line = lines[-1]
        if m.group(2) == "D":
            col -= int(m.group(1) or 1)
        elif m.group(2) == "K":
            del line[col:]
        elif m.group(0) == "\n":
            lines.append([])
            col = 0
        else:
            line[col:col + 1] = [m.group(0)]
            col += 1
    return ["".join(line) for line in lines]


def _wrap(text: str, width: int, seed: int) -> list[str]:
    out = io.StringIO()
    ww, rng, i = WordWrap(out, width), random.Random(seed), 0
    while i < len(text):   # in pieces of 1-7 characters, as tokens stream
        n = rng.randint(1, 7)
        ww.write(text[i:i + n])
        i += n
    return screen(out.getvalue())


def test_words_move_whole_to_the_next_line():
    words = [random.Random(1).choice(["sky", "blue", "because", "Rayleigh", "scattering", "of", "light", "a"])
             for _ in range(400)]
    random.Random(2).shuffle(words)
    text = " ".join(words) + "\nA second paragraph, short."
    for width, seed in ((40, 0), (41, 1), (80, 2), (23, 3)):
        lines = _wrap(text, width, seed)
        assert all(len(ln) <= width - MARGIN for ln in lines), (width, lines)
        assert " ".join(" ".join(lines).split()) == " ".join(text.split())   # every word, in order, none split
        assert len(lines) > len(text) / (width - MARGIN)                       # it did wrap
        assert any(ln.startswith("A second") for ln in lines) and lines[-1].endswith("short.")   # its own line


def test_a_word_longer_than_a_line_is_broken_at_the_edge():
    lines = _wrap("x" * 100 + " end", 30, 0)
    assert all(len(ln) <= 25 for ln in lines) and "".join(lines).replace(" ", "") == "x" * 100 + "end"


def test_wide_characters_take_two_columns():
    assert cell_width("漢") == 2 and cell_width("a") == 1 and cell_width("\u0301") == 0
    out = io.StringIO()
    WordWrap(out, 20).write("漢" * 20)
    assert [len(ln) for ln in out.getvalue().split("\n")] == [7, 7, 6]   # 15 columns a line: 7 wide characters
