"""`tinylm history`: a finished (or interrupted) run's losses, read back from its run directory."""

from __future__ import annotations

import json

import click

from tinylm.commands.common import ckpt_option


@click.command(name="history")
@ckpt_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the whole record as JSON: evaluations (from the checkpoint) and logged "
                   "steps (from metrics.jsonl).")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None,
              help="Also draw train and val loss against step into this PNG (needs matplotlib).")
def history(ckpt, as_json, plot_file):
    """A run's losses: every evaluation saved in the checkpoint, with the logged steps of
    metrics.jsonl beside it (the same record 'tinylm train' draws into loss.png).

    \b
    Example:
      tinylm history --ckpt out
      tinylm history --ckpt out --json
      tinylm history --ckpt out --plot loss.png
    """
    from tinylm.checkpoint import load_checkpoint
    from tinylm.lab.report import PLOT_HINT
    from tinylm.metrics import plot_losses, read_metrics

    ck = load_checkpoint(ckpt)
    step = ck.train.get("step", 0)
    baseline = ck.train.get("unigram_baseline")
    evaluations = [{"step": s, "train_loss": t, "val_loss": v} for s, t, v in ck.train.get("history", [])]
    # metrics.jsonl may run past the checkpoint (a crash after the last save): up to its step only
    steps = [r for r in read_metrics(ck.path.parent) if r.get("event") == "step" and r["step"] <= step]
    if plot_file is not None:
        records = steps + [{"event": "eval", **e} for e in evaluations]
        if not plot_losses(sorted(records, key=lambda r: r["step"]), baseline, plot_file):
            raise click.ClickException(PLOT_HINT)
    if as_json:
        click.echo(json.dumps({"checkpoint": str(ck.path), "step": step, "unigram_baseline": baseline,
                               "evaluations": evaluations, "steps": steps}))
        return 0
    if not evaluations:
        click.echo(f"{ck.path}: no evaluations recorded (step {step})")
    else:
        click.echo(f"{'step':>7} {'train loss':>11} {'val loss':>10}")
        for e in evaluations:
            click.echo(f"{e['step']:>7} {e['train_loss']:>11.4f} {e['val_loss']:>10.4f}")
    if baseline is not None:
        click.echo(f"unigram baseline {baseline:.4f}")
    if steps:
        last = steps[-1]
        click.echo(f"{len(steps)} logged steps in metrics.jsonl; at step {last['step']}: loss "
                   f"{last['loss']:.4f}, {last['tokens_per_s']:,.0f} tokens/s")
    if plot_file is not None:
        click.echo(f"wrote {plot_file}")
    return 0
