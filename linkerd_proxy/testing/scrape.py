"""Read a proxy's ``/metrics`` text the way a test wants to ask about it.

Example::

    scrape = Scrape.parse(text)
    assert scrape.value("tcp_open_total", direction="inbound", peer="src") == 1
    assert scrape.duplicates() == []
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import attrs

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_labels(text: str) -> dict[str, str]:
    """Parse ``a="1",b="x\\"y"`` into a dict, undoing the text-format escapes.

    Raises:
        ValueError: if the text is not a well-formed label list.
    """
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"malformed labels at {pos}: {text!r}")
        raw = m.group(2)
        labels[m.group(1)] = raw.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        pos = m.end()
    return labels


@attrs.frozen
class Sample:
    """One line of the exposition: a name, its labels, its value, and the raw line."""

    name: str
    labels: dict[str, str] = attrs.field(hash=False)
    value: float
    line: str

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        return self.name == name and all(self.labels.get(k) == v for k, v in labels.items())


@attrs.frozen
class Scrape:
    """A parsed scrape: the samples in order, plus the comment lines."""

    samples: tuple[Sample, ...]
    comments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: list[Sample] = []
        comments: list[str] = []
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                comments.append(line)
                continue
            m = _SAMPLE.match(line)
            if not m:
                raise ValueError(f"not a sample line: {line!r}")
            labels = parse_labels(m.group("labels") or "")
            samples.append(Sample(m.group("name"), labels, float(m.group("value")), line))
        return cls(tuple(samples), tuple(comments))

    def find(self, name: str, **labels: str) -> Iterator[Sample]:
        """Samples named ``name`` whose labels include all of ``labels``."""
        return (s for s in self.samples if s.matches(name, labels))

    def value(self, name: str, **labels: str) -> float:
        """The sum over the samples :meth:`find` returns (0 if there is none)."""
        return sum(s.value for s in self.find(name, **labels))

    def duplicates(self) -> list[str]:
        """Series that appear more than once (name plus rendered labels)."""
        seen: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        dups: list[str] = []
        for s in self.samples:
            key = (s.name, frozenset(s.labels.items()))
            if key in seen:
                dups.append(s.line)
            seen.add(key)
        return dups
