"""The command lines README.md and docs/*.md show (for tests/test_docs_commands.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = ("README.md", "docs/*.md")
# Files whose header comments show commands (`#   snakemake ...`).
COMMENT_FILES = ("Snakefile", "workflow_config.yaml", "profiles/*/config.yaml")

# What a shown command starts with (the project's tools; not shell output or prose).
COMMAND_RE = re.compile(r"^(\.venv/bin/\S+|python3?|snakemake|make|pytest|pip3?)(\s|$)")
SHELL_LANGS = {"bash", "sh", "shell", "console", ""}
FENCE_RE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
INLINE_RE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


@dataclass(frozen=True)
class DocCommand:
    text: str  # the command as shown (continuations joined, prompt stripped, trailing comment kept)
    file: str  # e.g. "README.md"
    line: int  # 1-based line it starts on
    inline: bool  # an inline `code span` in prose, not a fenced block

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def _fenced(rel: str, text: str) -> list[DocCommand]:
    out = []
    for block in FENCE_RE.finditer(text):
        if block.group(1).lower() not in SHELL_LANGS:
            continue
        first = text.count("\n", 0, block.start(2)) + 1
        pending, start = "", None
        for offset, raw in enumerate(block.group(2).splitlines()):
            line = raw.strip()
            if pending == "" and line.startswith("$ "):
                line = line[2:]
            if start is None:
                start = first + offset
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            whole, pending = pending + line, ""
            if COMMAND_RE.match(whole):
                out.append(DocCommand(whole, rel, start, inline=False))
            start = None
    return out


def _inline(rel: str, text: str) -> list[DocCommand]:
    prose = FENCE_RE.sub(lambda m: "\n" * m.group(0).count("\n"), text)  # keep line numbers
    out = []
    for span in INLINE_RE.finditer(prose):
        code = span.group(1).strip()
        if COMMAND_RE.match(code):
            out.append(DocCommand(code, rel, prose.count("\n", 0, span.start()) + 1, inline=True))
    return out


def _comments(rel: str, text: str) -> list[DocCommand]:
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"#\s+(.*\S)", line)
        if match and COMMAND_RE.match(match.group(1)):
            out.append(DocCommand(match.group(1), rel, number, inline=True))
    return out


def doc_commands(root: Path = ROOT) -> list[DocCommand]:
    """Every command line shown in README.md and docs/*.md -- the lines of shell code blocks (and of
    unlabelled blocks) that start with a project tool, and inline code spans that do -- and in the
    header comments of the Snakefile, workflow_config.yaml and the profiles."""
    out = []
    for pattern in DOC_FILES:
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            text = path.read_text()
            out += _fenced(rel, text) + _inline(rel, text)
    for pattern in COMMENT_FILES:
        for path in sorted(root.glob(pattern)):
            out += _comments(path.relative_to(root).as_posix(), path.read_text())
    return out


if __name__ == "__main__":
    for cmd in doc_commands():
        print(("inline " if cmd.inline else "block  ") + str(cmd))
