"""`tinylm finetune` and `tinylm classify`: a pre-trained model fine-tuned to label texts."""

from __future__ import annotations

import json

import click

from tinylm.classify import FINETUNE_DEFAULTS
from tinylm.commands.common import (Progress, StopOnSignal, activate_backend, backend_option,
                                    checkpoint_option, ckpt_option, echo_err)
from tinylm.errors import ConfigError
from tinylm.train import TrainConfig

@click.command()
@ckpt_option
@click.option("--train", "train_file", required=True, type=click.Path(dir_okay=False),
              help="Labelled texts: CSV with a 'text,label' header, or JSONL {\"text\", \"label\"}.")
@click.option("--val", "val_file", required=True, type=click.Path(dir_okay=False),
              help="Labelled texts to score on (same formats); labels must occur in --train.")
@click.option("--out", default="runs/finetune", show_default=True, type=click.Path(file_okay=False),
              help="Run directory for the classifier checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a checkpoint already in --out.")
@click.option("--pooling", type=click.Choice(["cls", "mean", "last"]), default=None,
              help="Text vector: [CLS] token (encoder default), mean of positions, or last token "
                   "(GPT default).")
@click.option("--strict", is_flag=True, help="Refuse files with bad rows instead of leaving them out.")
@click.option("--max-iters", type=click.IntRange(min=1), default=None,
              help=f"[{FINETUNE_DEFAULTS['max_iters']}]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help=f"[{FINETUNE_DEFAULTS['batch_size']}]")
@click.option("--learning-rate", type=float, default=None,
              help=f"[{FINETUNE_DEFAULTS['learning_rate']}]")
@click.option("--eval-interval", type=click.IntRange(min=1), default=None,
              help=f"[{FINETUNE_DEFAULTS['eval_interval']}]")
@click.option("--seed", type=click.IntRange(min=0), default=None, help=f"[{TrainConfig.seed}]")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@backend_option
def finetune(ckpt, train_file, val_file, out, overwrite, pooling, strict, as_json, backend, threads,
             **values):
    """Fine-tune a pre-trained checkpoint to classify texts; scores it on --val.

    \b
    Example:
      tinylm train --objective mlm --out enc
      tinylm finetune --ckpt enc --train reviews.csv --val reviews-val.csv --out clf
      tinylm classify --ckpt clf "what a great film"
    """
    from tinylm.checkpoint import checkpoint_path
    from tinylm import rundir
    from tinylm.classify import finetune as run_finetune, format_report

    activate_backend(backend, threads)
    if checkpoint_path(out).exists() and not overwrite:
        raise ConfigError(f"{out} already holds a checkpoint; pass --overwrite to replace it, "
                          "or another --out")
    given = {k: v for k, v in values.items() if v is not None}
    if "learning_rate" in given:  # keep the schedule's floor below a user's rate
        given.setdefault("min_lr", given["learning_rate"] / 10)
    train_config = TrainConfig(**{**FINETUNE_DEFAULTS, **given})
    echo_err(f"finetune: {json.dumps(train_config.to_dict())}")
    with rundir.exclusive(out), StopOnSignal() as stop:  # one writer per --out, probed first
        result = run_finetune(ckpt, train_file, val_file, out, train_config, pooling, strict,
                              on_event=Progress(train_config.max_iters, None),
                              warn=lambda m: echo_err(f"warning: {m}"),
                              stop_requested=lambda: stop.requested)
    if as_json:
        click.echo(json.dumps({**result.report, "checkpoint": str(result.path)}))
    else:
        click.echo(format_report(result.report))
    echo_err(f"classifier saved in {out}; use it with: tinylm classify --ckpt {out} \"some text\"")
    return 0


@click.command()
@checkpoint_option("'tinylm finetune --out'")
@click.argument("texts", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print labels and probabilities as JSON.")
@backend_option
def classify(ckpt, texts, as_json, backend, threads):
    """Label texts with a classifier from 'tinylm finetune'; prints each label and its probabilities.

    \b
    Example:
      tinylm classify --ckpt clf "what a great film" "a dull, sad plot"
    """
    from tinylm.classify import load_classifier, predict

    activate_backend(backend, threads)
    model, tokenizer, _ = load_classifier(ckpt)
    results, truncated = predict(model, tokenizer, list(texts))
    if truncated:
        echo_err(f"warning: {truncated} text(s) longer than block_size {model.config.block_size} "
                  "tokens were truncated to their beginning")
    if as_json:
        click.echo(json.dumps(results))
        return 0
    for r in results:
        ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
        click.echo(f"{r['label']}\t" + "  ".join(f"{k} {p:.3f}" for k, p in ranked) + f"\t{r['text']}")
    return 0
