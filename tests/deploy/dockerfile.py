"""A small Dockerfile reader: stages, their instructions, ENV, COPY; enough to check what the images hold."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    """One instruction with its (continuation-joined) arguments."""

    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form argument, or None for shell form."""
        text = self.args.strip()
        if text.startswith("["):
            parsed = json.loads(text)
            assert isinstance(parsed, list)
            return [str(x) for x in parsed]
        return None


@dataclass
class Stage:
    """A FROM … AS name section."""

    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """Instructions of one kind, in order."""
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    """Global ARGs and the stages, in order."""

    global_args: dict[str, str]
    stages: list[Stage]

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        """Parse; comments and blank lines dropped, backslash continuations joined."""
        logical: list[tuple[int, str]] = []
        buf, start = "", 0
        for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.rstrip()
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue
            if not buf:
                start = n
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            logical.append((start, buf + line))
            buf = ""
        global_args: dict[str, str] = {}
        stages: list[Stage] = []
        for n, text in logical:
            keyword, _, args = text.strip().partition(" ")
            keyword = keyword.upper()
            if keyword == "FROM":
                m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", args.strip(),
                             re.IGNORECASE)
                assert m, f"line {n}: cannot parse FROM {args!r}"
                stages.append(Stage(name=m.group(2) or str(len(stages)), base=m.group(1)))
            elif not stages:
                assert keyword == "ARG", f"line {n}: {keyword} before the first FROM"
                name, _, default = args.strip().partition("=")
                global_args[name] = default
            else:
                stages[-1].instructions.append(Instruction(keyword, args.strip(), n))
        return cls(global_args, stages)

    def stage(self, name: str) -> Stage:
        """A stage by name."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def lineage(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, root first."""
        chain: list[Stage] = []
        names = {s.name for s in self.stages}
        current: str | None = name
        while current in names:
            s = self.stage(current)
            chain.insert(0, s)
            current = s.base
        return chain

    def env(self, name: str) -> dict[str, str]:
        """ENV in effect in a stage (its own and inherited)."""
        out: dict[str, str] = {}
        for s in self.lineage(name):
            for i in s.all("ENV"):
                for token in shlex.split(i.args):
                    key, eq, value = token.partition("=")
                    assert eq, f"line {i.line}: use ENV KEY=VALUE, got {token!r}"
                    out[key] = value
        return out

    def copies(self, name: str) -> list[tuple[str | None, list[str], str]]:
        """(from-stage or None, sources, destination) of every COPY in a stage's lineage."""
        out: list[tuple[str | None, list[str], str]] = []
        for s in self.lineage(name):
            for i in s.all("COPY"):
                tokens = shlex.split(i.args)
                flags = [t for t in tokens if t.startswith("--")]
                rest = [t for t in tokens if not t.startswith("--")]
                src_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
                out.append((src_stage, rest[:-1], rest[-1]))
        return out

    def last(self, name: str, keyword: str) -> Instruction | None:
        """The instruction of that kind in effect in a stage (the last one in its lineage)."""
        found = None
        for s in self.lineage(name):
            for i in s.all(keyword):
                found = i
        return found
