"""`tinylm inspect attention|ablate` (the parts) and `tinylm lab induction|grokking|scaling` (the whole).

Each command writes results.json and PNG figures into --out; docs/lab/ has a page per experiment.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, fields

import click

from tinylm import backends
from tinylm.commands.common import activate_backend, backend_option, ckpt_option, echo_err
from tinylm.errors import ConfigError
from tinylm.lab.grokking import GrokkingConfig
from tinylm.lab.induction import InductionConfig
from tinylm.lab.scaling import ScalingConfig

def _field_options(config_cls, skip=()):
    """One option per field of a lab config dataclass: --max-iters -> max_iters (default: the field's)."""
    def decorate(f):
        for fld in reversed(fields(config_cls)):
            if fld.name in skip:
                continue
            kind = {int: click.INT, float: click.FLOAT, str: click.STRING}[type(fld.default)]
            f = click.option(f"--{fld.name.replace('_', '-')}", fld.name, type=kind, default=None,
                             help=f"[{fld.default}]")(f)
        return f
    return decorate


def _lab_out_option(default: str):
    return click.option("--out", default=default, show_default=True, type=click.Path(file_okay=False),
                        help="Directory for results.json and the PNG figures.")


def _write_lab_report(out, results: dict, figures: dict) -> None:
    from tinylm.lab.report import PLOT_HINT, write_report

    written = write_report(out, results, figures)
    if written["plots"] is None:
        echo_err(PLOT_HINT)
    for path in [written["json"], *(written["plots"] or [])]:
        click.echo(f"wrote {path}")


def _announce(experiment: str, cfg, describe) -> "LabProgress":
    """Print the resolved config and backend; the progress printer for cfg.max_iters steps."""
    echo_err(f"{experiment}: {json.dumps(asdict(cfg))}; backend {backends.current().name}")
    return LabProgress(cfg.max_iters, describe)


def _finish(out, results: dict, figures: dict) -> None:
    """Whether the experiment's signature held, then results.json and the figures."""
    held = "reproduced" if results["signature"]["holds"] else "NOT reproduced"
    click.echo(f"signature {held} in {results['seconds']:.0f} s")
    _write_lab_report(out, results, figures)


class LabProgress:
    """Evaluation events on stderr: one updating line on a terminal, about 15 log lines otherwise."""

    def __init__(self, total: int, describe):
        self.total, self.describe = total, describe
        self.tty = sys.stderr.isatty()
        self.every, self.next_line = max(1, total // 15), 0

    def __call__(self, e: dict) -> None:
        if e["event"] == "start":
            if self.tty:
                click.echo("", err=True)
            self.next_line = 0
            return
        if e["event"] != "eval":
            return
        line = f"step {e['step']:>6}/{self.total} | {self.describe(e)} | {e['seconds']:.0f} s"
        if self.tty:
            click.echo("\r" + line.ljust(110), nl=False, err=True)
            if e["step"] == self.total:
                click.echo("", err=True)
        elif e["step"] >= self.next_line or e["step"] == self.total:
            self.next_line = e["step"] + self.every
            echo_err(line)


@click.group(name="inspect")
def inspect_group():
    """Reductionist tools: attention heatmaps and head ablations of a trained GPT.

    \b
    Example:
      tinylm inspect attention --ckpt out --prompt "def __init__(self):"
      tinylm inspect ablate --ckpt out --mode mean
    """


@inspect_group.command(name="attention")
@ckpt_option
@click.option("--prompt", required=True, help="Text whose attention patterns to draw.")
@_lab_out_option("runs/inspect/attention")
@backend_option
def inspect_attention(ckpt, prompt, out, backend, threads):
    """Attention of every layer and head on a prompt: one heatmap grid, tokens on the axes.

    \b
    Example:
      tinylm inspect attention --ckpt out --prompt "for i in range(10):" --out runs/inspect/attn
    """
    from tinylm.checkpoint import load_model
    from tinylm.lab import heads, plots

    activate_backend(backend, threads)
    model, tokenizer, ck = load_model(ckpt)
    heads.require_gpt(model, ck.path)
    results = {"experiment": "inspect-attention", "checkpoint": str(ck.path), "prompt": prompt,
               **heads.inspect_attention(model, tokenizer, prompt)}
    echo_err(f"{len(results['tokens'])} tokens, {results['n_layer']} layers x "
              f"{results['n_head']} heads")
    _write_lab_report(out, results, {"attention": plots.attention_grid})
    return 0


@inspect_group.command(name="ablate")
@ckpt_option
@click.option("--data", type=click.Path(), default=None,
              help="Text to measure the loss on [the run's own validation split].")
@click.option("--mode", type=click.Choice(["zero", "mean"]), default="zero", show_default=True,
              help="Replace a head's output by zero, or by its mean over the data.")
@click.option("--batches", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the evaluation windows.")
@_lab_out_option("runs/inspect/ablate")
@backend_option
def inspect_ablate(ckpt, data, mode, batches, batch_size, seed, out, backend, threads):
    """Knock out each attention head in turn; table of the validation-loss change per layer x head.

    \b
    Example:
      tinylm inspect ablate --ckpt out --mode mean --out runs/inspect/ablate
    """
    from tinylm.checkpoint import load_model
    from tinylm.lab import heads, plots
    from tinylm.run import held_out_ids

    activate_backend(backend, threads)
    model, tokenizer, ck = load_model(ckpt)
    heads.require_gpt(model, ck.path)
    ids, source = held_out_ids(ck, tokenizer, data)
    echo_err(f"data: {source}; {mode}-ablating {len(model.blocks)} x "
              f"{model.blocks[0].attn.n_head} heads")
    results = heads.inspect_ablation(model, ids, batch_size, batches, mode, seed,
                                     on_progress=lambda d, t: echo_err(f"head {d}/{t}"))
    results.update(experiment="inspect-ablate", checkpoint=str(ck.path), data=source, seed=seed)
    click.echo(f"loss {results['base_loss']:.4f} with every head; change when one head is "
               f"{mode}-ablated:")
    click.echo("layer " + "".join(f"{'head ' + str(h + 1):>10}" for h in range(len(results["delta"][0]))))
    for layer, row in enumerate(results["delta"]):
        click.echo(f"{layer + 1:>5} " + "".join(f"{d:>+10.4f}" for d in row))
    _write_lab_report(out, results, {"ablation": plots.ablation_heatmap})
    return 0


@click.group(name="lab")
def lab_group():
    """Experiments on emergence, minutes each: induction heads, grokking, scaling laws.

    \b
    Example:
      tinylm lab induction --out runs/lab/induction
      tinylm lab grokking --out runs/lab/grokking
      tinylm lab scaling --out runs/lab/scaling
    """


def _lab_run_options(default_out: str):
    def decorate(f):
        return _lab_out_option(default_out)(backend_option(f))
    return decorate


@lab_group.command(name="induction")
@_field_options(InductionConfig)
@_lab_run_options("runs/lab/induction")
def lab_induction(out, backend, threads, **values):
    """Induction heads: a 2-layer attention-only model's phase change on repeated random tokens.

    Trains the model and a control (a 1-layer attention model, or with --control
    lstm an LSTM of about the same parameter count); prints the signature
    (copied/random loss ratio, best layer-2 induction score) and writes
    results.json and induction.png.

    \b
    Example:
      tinylm lab induction --out runs/lab/induction          # ~2 min on 2 CPU cores
      tinylm lab induction --control lstm --out runs/lab/induction-lstm
    """
    from tinylm.lab import plots
    from tinylm.lab.induction import InductionConfig, run_induction

    activate_backend(backend, threads)
    cfg = InductionConfig(**{k: v for k, v in values.items() if v is not None})
    progress = _announce("induction", cfg, lambda e: (
        f"{e.get('label') or str(e['n_layer']) + '-layer'} | random-token loss {e['random_loss']:.3f} "
        f"| copied-token loss {e['copied_loss']:.3f}" + (
            f" | best last-layer induction score {max(e['induction_scores'][-1]):.2f}"
            if "induction_scores" in e else "")))
    results = run_induction(cfg, progress)
    sig = results["signature"]
    click.echo(f"{cfg.n_layer}-layer: copied/random loss {sig['copied_over_random']:.3f}, best "
               f"layer-{cfg.n_layer} induction score {sig['best_induction_score']:.2f}, loss drop "
               f"at step {sig['phase_change_step']}, score jump at step {sig['induction_jump_step']}")
    click.echo(f"layer 1: best previous-token score {sig['previous_token_score']:.2f}")
    control = results["runs"]["control"]
    click.echo(f"{control['label']} control ({control['parameters']:,} parameters, model "
               f"{results['runs']['model']['parameters']:,}): copied/random loss "
               f"{sig['control_copied_over_random']:.3f}")
    _finish(out, results, {"induction": plots.induction_curves})
    return 0


@lab_group.command(name="grokking")
@_field_options(GrokkingConfig)
@_lab_run_options("runs/lab/grokking")
def lab_grokking(out, backend, threads, **values):
    """Grokking: modular addition learnt long after it is memorised, under weight decay.

    Trains a 1-layer transformer on a fraction of the table a + b (mod p), with
    weight decay and without (the control); on --backend cupy the defaults are larger.

    \b
    Example:
      tinylm lab grokking --out runs/lab/grokking             # ~2 min on 2 CPU cores
      tinylm lab grokking --backend cupy --out runs/lab/grokking-gpu
    """
    from tinylm.lab import plots
    from tinylm.lab.grokking import GPU_DEFAULTS, run_grokking

    activate_backend(backend, threads)
    defaults = GPU_DEFAULTS if backends.current().name == "cupy" else {}
    cfg = GrokkingConfig(**{**defaults, **{k: v for k, v in values.items() if v is not None}})
    progress = _announce("grokking", cfg, lambda e: (
        f"weight decay {e['weight_decay']:g} | train acc {e['train_acc']:.3f} | "
        f"val acc {e['val_acc']:.3f} | val loss {e['val_loss']:.3f}"))
    results = run_grokking(cfg, progress)
    sig = results["signature"]
    click.echo(f"weight decay {cfg.weight_decay:g}: train accuracy 99% at step "
               f"{sig['train_99_step']}, validation accuracy 95% at step {sig['val_95_step']} "
               f"(delay x{sig['delay_ratio']:.1f})" if sig["val_95_step"] else
               f"weight decay {cfg.weight_decay:g}: train accuracy 99% at step "
               f"{sig['train_99_step']}, validation never reached 95%")
    click.echo(f"no weight decay: best validation accuracy {sig['control_best_val_acc']:.3f}")
    _finish(out, results, {"grokking": plots.grokking_curves})
    return 0


@lab_group.command(name="scaling")
@_field_options(ScalingConfig)
@click.option("--data", type=click.Path(), default=None,
              help="Text file or directory [offline default corpus].")
@click.option("--sizes", type=click.IntRange(min=3), default=None,
              help="Use the first N sizes of the ladder [5 on CPU, 7 on cupy].")
@_lab_run_options("runs/lab/scaling")
def lab_scaling(data, sizes, out, backend, threads, **values):
    """Scaling law: a ladder of GPT sizes on the same tokens, fitted to L(N) = a N^-alpha + c.

    \b
    Example:
      tinylm lab scaling --out runs/lab/scaling               # ~3 min on 2 CPU cores
      tinylm lab scaling --backend cupy --max-iters 4000
    """
    from tinylm.lab import plots
    from tinylm.lab.scaling import CPU_LADDER, GPU_LADDER, run_scaling
    from tinylm.run import load_corpus

    activate_backend(backend, threads)
    ladder = GPU_LADDER if backends.current().name == "cupy" else CPU_LADDER
    if sizes is not None:
        if sizes > len(GPU_LADDER):
            raise ConfigError(f"--sizes {sizes} exceeds the ladder's {len(GPU_LADDER)} sizes")
        ladder = GPU_LADDER[:sizes]
    cfg = ScalingConfig(**{k: v for k, v in values.items() if v is not None})
    corpus = load_corpus(data)
    echo_err(f"scaling: {json.dumps(asdict(cfg))}; {len(ladder)} sizes, {cfg.tokens:,} tokens "
              f"each; data {corpus.source}; backend {backends.current().name}")

    def progress(e):
        if e["event"] == "start":
            echo_err(f"[{e['index'] + 1}/{e['total']}] {e['name']}: {e['params']:,} parameters")
        elif e["event"] == "done":
            echo_err(f"  val loss {e['val_loss']:.4f} ({e['seconds']:.0f} s)")
    results = run_scaling(cfg, corpus, ladder, progress)
    click.echo(f"{'model':<10}{'params':>10}{'FLOPs':>11}{'val loss':>10}")
    for r in results["models"]:
        click.echo(f"{r['name']:<10}{r['params']:>10,}{r['train_flops']:>11.2e}{r['val_loss']:>10.4f}")
    fit, sig = results["fit"], results["signature"]
    click.echo(f"fit: L(N) = {fit['a']:.3g} N^-{fit['alpha']:.3f} + {fit['c']:.3f}, "
               f"R² {fit['r2']:.3f}; monotonic: {sig['monotonic']}")
    _finish(out, results, {"scaling": plots.scaling_laws})
    return 0
