"""The CLI explains itself: every train option's meaning, which backends run here, where a
checkpoint comes from."""

import re

import click
import pytest
from click.testing import CliRunner

from tinylm import backends
from tinylm.cli import cli, train
from tinylm.config import FIELD_HELP, MODEL_FIELDS, NANOGPT_NAMES, TRAIN_FIELDS


def help_text(*command):
    result = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return re.sub(r"\s+", " ", result.output)  # options' help is wrapped: compare on one line


def test_every_config_field_has_a_help_line():
    names = {f.name for f in MODEL_FIELDS + TRAIN_FIELDS}
    missing = sorted(names - set(FIELD_HELP))
    assert not missing, f"add a line to tinylm.config.FIELD_HELP for {missing}"
    assert set(NANOGPT_NAMES) <= names
    assert all(text.strip().endswith(".") for text in FIELD_HELP.values())


def test_every_train_option_has_a_meaning():
    text = help_text("train")
    for fld in MODEL_FIELDS + TRAIN_FIELDS:
        assert FIELD_HELP[fld.name] in text, fld.name
    assert "0 means max_iters" in text and "nanoGPT: gradient_accumulation_steps" in text
    undocumented = [p.name for p in train.params if isinstance(p, click.Option) and not p.help]
    assert not undocumented, undocumented


@pytest.mark.parametrize("command", [["train"], ["sample"], ["eval"], ["inspect", "attention"]])
def test_backend_help_lists_the_backends_and_which_run_here(command):
    text = help_text(*command)
    here = [name for name, ok, _ in backends.available_backends() if ok]
    assert f"Array backend: {', '.join(backends.REGISTRY)}." in text
    assert f"Runs here: {', '.join(here)}" in text


def test_classify_says_its_checkpoint_comes_from_finetune():
    assert "Run directory written by 'tinylm finetune --out'" in help_text("classify")
