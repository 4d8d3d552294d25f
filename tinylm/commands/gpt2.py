"""`tinylm import-gpt2` and `tinylm export-gpt2`: GPT-2 checkpoints in the Hugging Face layout."""

from __future__ import annotations

import click

from tinylm.commands.common import ckpt_option, echo_err
from tinylm.errors import ConfigError

@click.command(name="import-gpt2")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace a checkpoint already in --out.")
def import_gpt2(directory, out, overwrite):
    """Convert a GPT-2 checkpoint directory (HF layout) into a tinylm run directory.

    DIRECTORY holds config.json, model.safetensors, vocab.json and merges.txt, as
    on the Hugging Face hub (e.g. openai-community/gpt2, downloaded beforehand).

    \b
    Example:
      tinylm import-gpt2 ~/models/gpt2 --out gpt2
      tinylm sample --ckpt gpt2 --prompt "Hello, I'm a language model," --top-k 40
    """
    from tinylm import rundir
    from tinylm.checkpoint import checkpoint_path
    from tinylm.gpt2 import import_gpt2 as convert

    if checkpoint_path(out).exists() and not overwrite:
        raise ConfigError(f"{out} already holds a checkpoint; pass --overwrite or another --out")
    with rundir.exclusive(out):  # one writer per --out, probed first
        path = convert(directory, out)
    click.echo(f"wrote {path}")
    return 0


@click.command(name="export-gpt2")
@ckpt_option
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for model.safetensors, config.json (and vocab.json, merges.txt).")
def export_gpt2(ckpt, out):
    """Write a GPT checkpoint in GPT-2's HF layout (loadable by transformers' GPT2LMHeadModel).

    \b
    Example:
      tinylm export-gpt2 --ckpt out --out exported
      python -c "from transformers import GPT2LMHeadModel; GPT2LMHeadModel.from_pretrained('exported')"
    """
    from tinylm.checkpoint import load_model
    from tinylm.gpt2 import export_gpt2 as write

    model, tokenizer, _ = load_model(ckpt)
    files = write(model, tokenizer, out)
    for f in files:
        click.echo(f"wrote {f}")
    if len(files) == 2:
        echo_err(f"no vocab.json/merges.txt: the run's tokenizer ({type(tokenizer).__name__}) is not "
                  "byte-level BPE; train one with 'tinylm tokenizer train' and 'tinylm train --tokenizer'")
    return 0
