"""The shipped stylesheets are well formed: merges have left a rule unclosed before,
and browsers then read every rule after it as nested (and never matching)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STYLESHEETS = sorted([*ROOT.glob("alarms/static/**/*.css"), *ROOT.glob("static/**/*.css")])


def nesting_errors(css: str) -> list[str]:
    """Where a rule opens inside another rule (only @-rules may hold rules), and
    whether every brace closes."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    errors: list[str] = []
    stack: list[bool] = []  # per open block: is it an @-rule?
    start = 0
    for i, char in enumerate(css):
        if char == "{":
            prelude = css[start:i].strip()
            if stack and not stack[-1]:
                errors.append(
                    f"{prelude!r} opens inside a rule (line {css.count(chr(10), 0, i) + 1})"
                )
            stack.append(prelude.startswith("@"))
            start = i + 1
        elif char in "};":
            if char == "}":
                if not stack:
                    errors.append(f"an extra '}}' (line {css.count(chr(10), 0, i) + 1})")
                else:
                    stack.pop()
            start = i + 1
    if stack:
        errors.append(f"{len(stack)} block(s) never closed")
    return errors


def test_the_check_finds_an_unclosed_rule() -> None:
    assert nesting_errors("a { color: red; }\n@media (x) { b { c: d; } }") == []
    assert nesting_errors("a { color: red;\nb { c: d; }\n}") != []
    assert nesting_errors("a { color: red; }\nb { c: d;") != []


@pytest.mark.parametrize("path", STYLESHEETS, ids=lambda p: str(p.relative_to(ROOT)))
def test_stylesheet_rules_close(path: Path) -> None:
    assert STYLESHEETS, "no stylesheets found"
    assert nesting_errors(path.read_text()) == []
