"""README.md's Python examples run as written (in a temporary directory, the training shortened)."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinylm.cli import cli
from tinylm.errors import BackendUnavailable

README = Path(__file__).resolve().parents[1] / "README.md"
# What this test changes in a block: the length of the training run, nothing else.
SHORTER = {"max_iters=200": "max_iters=6, eval_interval=3, eval_iters=2"}


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)


def shortened(block: str) -> str:
    for long, short in SHORTER.items():
        block = block.replace(long, short)
    return block


def test_the_readme_shows_loading_generating_and_training_from_python():
    blocks = "\n".join(python_blocks())
    assert "tinylm.load(" in blocks and ".generate(" in blocks and "tinylm.fit(" in blocks
    assert all(long in blocks for long in SHORTER), "update SHORTER to the README's training example"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, capsys):
    # `out/` as README command 1 leaves it, trained for a few steps instead of 2000
    trained = CliRunner().invoke(cli, ["train", "--preset", "tiny", "--max-iters", "4",
                                       "--eval-interval", "2", "--eval-iters", "2", "--out", "out"])
    assert trained.exit_code == 0, trained.output
    capsys.readouterr()
    block = python_blocks()[index]
    try:
        exec(compile(shortened(block), f"README.md python block {index + 1}", "exec"), {})
    except BackendUnavailable as exc:
        pytest.skip(f"README block {index + 1} needs a backend not available here: {exc}")
    printed = capsys.readouterr().out
    if ".generate(" in block:
        prompt = re.search(r'\.generate\("([^"]*)"', block).group(1)
        generated = printed[printed.index(prompt):]  # after what the block printed before it
        assert len(generated) > len(prompt) + 20, printed
    if "tinylm.fit(" in block:
        assert "step 3: val loss" in printed and "step 6: val loss" in printed
        assert (Path.cwd() / "runs" / "script" / "metrics.jsonl").is_file()
