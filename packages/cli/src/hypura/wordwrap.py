"""Streamed text broken at word boundaries before the terminal's right edge, as ``ollama run`` wraps answers.

Text arrives piece by piece, so a word is only known to be too long once it crosses the limit: then the
part of it already on the line is moved to the next one (cursor left over it, erase to the end of the line,
new line, the part again). A word longer than a line is broken where it reaches the edge.
"""
from __future__ import annotations

import unicodedata
from typing import IO

MARGIN = 5   # columns kept free at the right edge


def cell_width(ch: str) -> int:
    """Terminal columns of one character: 2 for wide East Asian characters, 0 for combining marks."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


class WordWrap:
    """Writes to `out`, wrapping at `width - MARGIN` columns; `reset` when the cursor is back at column 0."""

    def __init__(self, out: IO[str], width: int) -> None:
        self.out = out
        self.limit = max(width - MARGIN, 10)
        self.col = 0
        self.word = ""   # the word being written: its characters since the last space on this line

    def reset(self) -> None:
        self.col, self.word = 0, ""

    def write(self, text: str) -> None:
        for ch in text:
            if ch in "\r\n":
                self.out.write(ch)
                self.reset()
                continue
            w = cell_width(ch)
            if self.col + w > self.limit and ch in " \t":   # a space at the edge: the line ends there
                self.out.write("\n")
                self.reset()
                continue
            if self.col + w > self.limit:
                moved = sum(cell_width(c) for c in self.word)
                if self.word and moved < self.limit - MARGIN:   # move the word begun here to the next line
                    self.out.write(f"\x1b[{moved}D\x1b[K\n{self.word}")
                    self.col = moved
                else:                                            # a word as long as a line: break it
                    self.out.write("\n")
                    self.col, self.word = 0, ""
            self.out.write(ch)
            self.col += w
            self.word = "" if ch in " \t" or w == 2 else self.word + ch
