"""Every ```python example in docs/*.md and README.md runs, so the guide cannot rot.

The blocks of one file run in order in one namespace (a later block may use what an
earlier one defined, as a reader would), with ``__name__`` not ``"__main__"`` (so
``app.run()`` under ``if __name__ == "__main__":`` is skipped), in a temporary working
directory. Tracebacks point at the Markdown file and line. Modules are served in-process
by ``TestClient``. Then every ``test_*`` function the examples define is called, as
pytest would call it, its arguments from the ``@pytest.fixture`` functions they define.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDE = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """Return ``(first line number, code)`` of each ```python block in ``path``."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        if m.group(1).strip() == "python":
            line = text.count("\n", 0, m.start(2)) + 1
            blocks.append((line, m.group(2)))
    return blocks


def test_fence_scanner_finds_blocks(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text("text\n```python\na = 1\n```\n\n```sh\nls\n```\n```python\nb = a\n```\n")
    assert python_blocks(md) == [(3, "a = 1\n"), (10, "b = a\n")]


def test_the_guide_has_the_expected_chapters() -> None:
    names = {p.name for p in GUIDE}
    expected = {
        "README.md",
        "getting-started.md",
        "routing.md",
        "blocking-vs-asyncio.md",
        "secrets.md",
        "jwt.md",
        "frameworks.md",
        "http-client.md",
        "ports.md",
        "testing.md",
        "deploying.md",
        "protocol.md",
    }
    assert expected <= names, expected - names
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for name in names - {"README.md"}:
        assert f"({name})" in index, f"docs/README.md does not link {name}"


@pytest.mark.parametrize(
    "path", [*GUIDE, ROOT / "README.md"], ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(path)
    if path.parent == DOCS and path.name not in {"README.md", "deploying.md", "protocol.md"}:
        assert blocks, f"{path.name} has no example"
    monkeypatch.chdir(tmp_path)
    # A real module object, registered while the examples run (dataclasses and pickling
    # look their module up in sys.modules).
    module = types.ModuleType(f"docs_{path.stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace: dict[str, object] = module.__dict__
    for line, code in blocks:
        source = "\n" * (line - 1) + code  # tracebacks name the Markdown line
        exec(compile(source, str(path), "exec"), namespace)
    for name, value in list(namespace.items()):
        if name.startswith("test_") and inspect.isfunction(value):
            run_like_pytest(value, namespace)


def run_like_pytest(test: Callable[..., Any], namespace: dict[str, object]) -> None:
    """Call ``test`` with the fixtures its parameters name (fixtures without arguments)."""
    with contextlib.ExitStack() as stack:
        kwargs = {}
        for param in inspect.signature(test).parameters:
            fixture = namespace[param]
            fn = getattr(fixture, "_get_wrapped_function", lambda f=fixture: f)()
            value = fn()
            if inspect.isgenerator(value):
                gen: Iterator[Any] = value
                stack.callback(lambda g=gen: next(g, None))  # the code after its yield
                value = next(gen)
            kwargs[param] = value
        test(**kwargs)
