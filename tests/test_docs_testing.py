"""docs/testing.md runs as written: its python blocks, in order, then the test functions they define."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_testing_tutorial_runs_as_written():
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 3, "the tutorial's code blocks were not found"
    namespace = {"__name__": "docs_testing_tutorial"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    tests = [fn for name, fn in namespace.items() if name.startswith("test_") and callable(fn)]
    assert len(tests) >= 5
    for test in tests:
        test()
