"""tinylm's command line: a thin click layer over the library.

    tinylm train                      # train a small GPT on the offline default corpus
    tinylm sample --ckpt out          # generate text from it
    tinylm eval --ckpt out            # validation loss, perplexity, unigram baseline
    tinylm backends                   # which backends run here, and why not

Results go to stdout, progress and diagnostics to stderr. Bad input gets one
line on stderr and a non-zero exit (2: usage, 1: runtime), never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import sys

import click

from tinylm import backends
from tinylm.commands import finetune, gpt2, history, lab, tokenizer
from tinylm.commands.common import (Progress, StopOnSignal, activate_backend, backend_option,
                                    ckpt_option, echo_err)
from tinylm.config import (DEFAULT_PRESET, MODEL_FIELDS, PRESETS, TRAIN_FIELDS, field_help,
                           read_toml, resolve_config)
from tinylm.errors import ConfigError, TinyLMError

SHRINK = "try a smaller --batch-size, --block-size or model (--n-layer, --n-embd)"


class TinyLMGroup(click.Group):
    """Turns every anticipated failure into one line on stderr and an exit code."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        try:
            rv = super().main(args=args, prog_name=prog_name or "tinylm",
                              standalone_mode=False, **extra)
        except click.exceptions.Abort:
            echo_err("aborted")
            sys.exit(130)
        except click.UsageError as exc:
            where = f"; see 'tinylm {exc.ctx.info_name} --help'" if exc.ctx and exc.ctx.parent else \
                "; see 'tinylm --help'"
            echo_err(f"error: {exc.format_message()}{where}")
            sys.exit(2)
        except click.ClickException as exc:
            echo_err(f"error: {exc.format_message()}")
            sys.exit(exc.exit_code)
        except TinyLMError as exc:
            echo_err(f"error: {exc}")
            sys.exit(exc.exit_code)
        except MemoryError:
            echo_err(f"error: out of memory; {SHRINK}")
            sys.exit(1)
        except OSError as exc:
            echo_err(f"error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
            sys.exit(1)
        except Exception as exc:
            # CuPy's cupy.cuda.memory.OutOfMemoryError, matched by name so cupy is never imported
            if type(exc).__name__ != "OutOfMemoryError":
                raise
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "allocation failed"
            echo_err(f"error: out of GPU memory ({detail}); {SHRINK}")
            sys.exit(1)
        except KeyboardInterrupt:
            echo_err("interrupted")
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=TinyLMGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tinylm")
def cli():
    """tinylm: train, sample and evaluate small GPTs on NumPy, Numba or a GPU.

    \b
    Example:
      tinylm train --max-iters 500 --out out
      tinylm sample --ckpt out --prompt "def " --num-tokens 200
    """


def main(argv=None):
    cli.main(args=argv, prog_name="tinylm")


# The commands beyond the core four live in tinylm/commands/, one module per topic.
for command in (finetune.finetune, finetune.classify, tokenizer.tokenizer, gpt2.import_gpt2,
                gpt2.export_gpt2, lab.inspect_group, lab.lab_group, history.history):
    cli.add_command(command)


# --------------------------------------------------------------------------- train
def _config_options(f):
    """One option per config field: --n-layer -> n_layer (nanoGPT's names)."""
    for fld in reversed(MODEL_FIELDS + TRAIN_FIELDS):
        kind = {int: click.INT, float: click.FLOAT, bool: click.BOOL, str: click.STRING}[type(fld.default)]
        f = click.option(f"--{fld.name.replace('_', '-')}", fld.name, type=kind, default=None,
                         help=field_help(fld.name))(f)
    return f


@cli.command()
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help=f"Named configuration [{DEFAULT_PRESET}]: tiny (seconds), cpu (nanoGPT's CPU "
                   "config, minutes), shakespeare (nanoGPT's shakespeare_char, GPU).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML file of config fields (n_layer = 4 ...); command-line options win.")
@click.option("--data", type=click.Path(), default=None,
              help="Text file or directory to train on [offline default: Python's own stdlib source].")
@click.option("--val-fraction", type=float, default=None, help="Share of the data held out [0.1].")
@click.option("--out", default="out", show_default=True, type=click.Path(file_okay=False),
              help="Run directory: checkpoint.safetensors, metrics.jsonl and loss.png.")
@click.option("--resume", is_flag=True, help="Continue the run saved in --out.")
@click.option("--overwrite", is_flag=True, help="Start afresh even if --out holds a checkpoint.")
@click.option("--distributed", is_flag=True,
              help="Data-parallel over the processes of 'mpiexec -n K' (MPI; NCCL with --backend "
                   "cupy); see docs/distributed.md.")
@click.option("--dist-timeout", type=float, default=300.0, show_default=True,
              help="Seconds a rank waits for the others before the whole job is aborted.")
@click.option("--objective", type=click.Choice(["clm", "mlm"]), default=None,
              help="clm: a GPT predicting the next token [default]; mlm: a bidirectional encoder "
                   "filling in masked tokens (BERT), to fine-tune with 'tinylm finetune'.")
@click.option("--tokenizer", "tokenizer_file", type=click.Path(dir_okay=False), default=None,
              help="Tokenizer JSON from 'tinylm tokenizer train' [the data's characters].")
@click.option("--model", "model_kind", type=click.Choice(["gpt", "lstm"]), default=None,
              help="gpt: the transformer [default]; lstm: embedding -> LSTM layers -> linear head, "
                   "the recurrent baseline (uses --n-layer, --n-embd, --block-size, --dropout).")
@backend_option
@_config_options
def train(preset, config_file, data, val_fraction, out, resume, overwrite, distributed,
          dist_timeout, objective, tokenizer_file, model_kind, backend, threads, **values):
    """Train a GPT on a text corpus (characters as tokens, or --tokenizer).

    \b
    Examples:
      tinylm train                               # ~2 min on 2 cores, offline corpus
      tinylm train --preset tiny --out runs/tiny # seconds
      tinylm train --data input.txt --n-layer 6 --max-iters 5000 --backend numba
      tinylm train --resume --out out --max-iters 4000
      mpiexec -n 2 tinylm train --distributed    # 2 processes, batch 2 x 12
      tinylm train --objective mlm --out enc     # masked-LM pre-training of an encoder
      tinylm train --data input.txt --tokenizer tok.json   # BPE tokens ('tinylm tokenizer train')
      tinylm train --model lstm --preset tiny --out lstm   # the recurrent baseline
    """
    from tinylm.distributed import SingleProcess, connect

    comm = connect(backend, dist_timeout) if distributed else SingleProcess()  # NCCL picks the GPU
    with comm.abort_on_error(), _sole_writer(out, comm.rank):
        return _train(comm, preset, config_file, data, val_fraction, out, resume, overwrite,
                      backend, threads, values, objective, tokenizer_file, model_kind)


def _sole_writer(out, rank: int):
    """Rank 0 holds --out's lock for the run (probing that it is writable first); others write nothing."""
    from tinylm import rundir

    return rundir.exclusive(out) if rank == 0 else contextlib.nullcontext()


def _train(comm, preset, config_file, data, val_fraction, out, resume, overwrite, backend,
           threads, values, objective=None, tokenizer_file=None, model_kind=None):
    """`tinylm train` on one rank: rank 0 reports and saves, the others stay quiet."""
    from tinylm.checkpoint import checkpoint_path
    from tinylm.distributed import SingleProcess, replicate
    from tinylm.run import new_run, resume_run
    from tinylm.tokenizers import load_tokenizer

    say = echo_err if comm.rank == 0 else (lambda message: None)
    activate_backend(backend, threads)
    toml_values = read_toml(config_file) if config_file else {}
    data = data if data is not None else toml_values.get("data")
    val_fraction = val_fraction if val_fraction is not None else toml_values.get("val_fraction", 0.1)
    if resume:
        given = {k: v for k, v in values.items() if v is not None}
        clash = sorted(k for k in given if k in {f.name for f in MODEL_FIELDS})
        if clash or preset or tokenizer_file:
            raise ConfigError(f"--resume keeps the saved model and tokenizer; drop "
                              f"{clash or (['--preset'] if preset else ['--tokenizer'])}")
        run = resume_run(out, given, data)
        if objective not in (None, run.objective):
            raise ConfigError(f"{out} was trained with --objective {run.objective}; drop --objective")
        if model_kind not in (None, run.state.model.model_type):
            raise ConfigError(f"{out} holds a {run.state.model.model_type} model; drop --model")
        say(f"resuming {run.out} at step {run.state.step}")
    else:
        # the configuration first: a leftover checkpoint must not hide an invalid option
        model_fields, train_config = resolve_config(preset, toml_values, values, model_kind or "gpt")
        tokenizer = load_tokenizer(tokenizer_file) if tokenizer_file else None
        if checkpoint_path(out).exists() and not overwrite:
            raise ConfigError(f"{out} already holds a checkpoint; pass --resume to continue it, "
                              "--overwrite to replace it, or another --out")
        run = new_run(model_fields, train_config, data, val_fraction, out, objective or "clm",
                      tokenizer=tokenizer, model=model_kind or "gpt")
    if run.objective != "clm" and not isinstance(comm, SingleProcess):
        raise ConfigError("--distributed trains the clm objective only; drop --distributed")
    replicate(run.state, run.train_config, comm)  # rank 0's weights everywhere; a batch stream per rank
    baseline = run.unigram_baseline()
    n_params = run.state.model.num_parameters()
    say(f"data: {run.corpus.source}; vocab {run.tokenizer.vocab_size} {run.tokenizer.unit}s; "
        f"backend {backends.current().name}")
    say(f"model: {json.dumps(run.model_config.to_dict())} ({n_params / 1e6:.2f}M parameters)")
    say(f"train: {json.dumps(run.train_config.to_dict())}")
    if not isinstance(comm, SingleProcess):  # a distributed job, even of one rank
        say(f"distributed: {comm.describe(run.train_config)}")
    progress = Progress(run.train_config.max_iters, baseline) if comm.rank == 0 else (lambda e: None)
    with StopOnSignal() as stop:
        state = run.execute(on_event=progress, stop_requested=lambda: comm.any_rank(stop.requested),
                            communicator=comm)
    if comm.rank != 0:
        return 0
    if stop.requested and state.step < run.train_config.max_iters:
        echo_err(f"stopped at step {state.step}; checkpoint saved in {run.out}. Resume with: "
                  f"tinylm train --resume --out {shlex.quote(str(run.out))}")
        return 0
    step, train_loss, val_loss = state.history[-1]
    click.echo(f"done: {step} steps, train loss {train_loss:.4f}, val loss {val_loss:.4f} "
               f"(unigram baseline {baseline:.4f}); checkpoint: {run.out}")
    if run.objective == "mlm":
        echo_err(f"fine-tune it with: tinylm finetune --ckpt {run.out} --train FILE --val FILE")
    else:
        echo_err(f"sample from it with: tinylm sample --ckpt {run.out}")
    return 0


# --------------------------------------------------------------------------- sample
@cli.command()
@ckpt_option
@click.option("--prompt", default="\n", show_default=False, help="Text to continue [a newline].")
@click.option("--num-tokens", type=click.IntRange(min=0), default=300, show_default=True)
@click.option("--temperature", type=float, default=0.8, show_default=True,
              help="Softmax temperature; 0 = greedy.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Sample among the k likeliest.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Nucleus sampling: among the fewest likeliest tokens whose probability "
                   "reaches p (0.9 is common).")
@click.option("--repetition-penalty", type=click.FloatRange(0, min_open=True), default=1.0,
              show_default=True, help="Above 1 discourages tokens already in the text (1.1-1.3).")
@click.option("--no-repeat-ngram-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Never repeat an n-gram of this many tokens (0 = off).")
@click.option("--stop", multiple=True,
              help="Stop before this string; repeatable (a newline in bash: --stop $'\\n\\n').")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@backend_option
def sample(ckpt, prompt, num_tokens, temperature, top_k, top_p, repetition_penalty,
           no_repeat_ngram_size, stop, seed, backend, threads):
    """Generate text from a trained checkpoint, streamed as it is produced (with a KV cache).

    \b
    Examples:
      tinylm sample --ckpt out --prompt "import " --num-tokens 200 --temperature 0.8 --top-k 40
      tinylm sample --ckpt gpt2 --prompt "Hello," --top-p 0.9 --repetition-penalty 1.2 \\
                    --no-repeat-ngram-size 3 --stop "<|endoftext|>" --stop $'\\n\\n'
    """
    from tinylm.checkpoint import load_model
    from tinylm.generate import check_sampling, generate_text

    activate_backend(backend, threads)
    sampling = check_sampling(temperature, top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                              no_repeat_ngram_size=no_repeat_ngram_size)
    model, tokenizer, _ = load_model(ckpt)
    prompt_ids = tokenizer.encode(prompt)
    click.echo(prompt, nl=False)
    generate_text(model, tokenizer, prompt_ids, num_tokens, sampling, seed, stop=stop,
                  on_text=lambda text: click.echo(text, nl=False))
    click.echo()
    return 0


# --------------------------------------------------------------------------- eval
@cli.command(name="eval")
@ckpt_option
@click.option("--data", type=click.Path(), default=None,
              help="Text to evaluate on [the run's own validation split].")
@click.option("--batches", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@backend_option
def evaluate(ckpt, data, batches, batch_size, as_json, backend, threads):
    """Loss, perplexity and bits per token (per character for a character tokenizer) on held-out text.

    --json: loss (nats per token), perplexity, bits_per_token, unit ("char" or "token"),
    bits_per_char (character tokenizers only), unigram_baseline, tokens, data, checkpoint.

    \b
    Example:
      tinylm eval --ckpt out
      tinylm eval --ckpt out --data other.txt --json
    """
    from tinylm.checkpoint import load_model
    from tinylm.data import unigram_entropy
    from tinylm.resources import check_inference
    from tinylm.run import held_out_ids, objective_parts
    from tinylm.train import estimate_loss

    activate_backend(backend, threads)
    model, tokenizer, ck = load_model(ckpt)
    _, _, batch_maker = objective_parts(ck.train.get("objective", "clm"), tokenizer)
    check_inference(model.config, batch_size, backends.current())
    block = model.config.block_size
    ids, source = held_out_ids(ck, tokenizer, data)
    loss = estimate_loss(model, ids, block, batch_size, batches, seed=0, batches=batch_maker)
    unit = tokenizer.unit  # "char" or "token": what the loss is per
    result = {"loss": loss, "perplexity": math.exp(loss), "bits_per_token": loss / math.log(2),
              "unit": unit, "unigram_baseline": unigram_entropy(ids, tokenizer.vocab_size),
              "tokens": int(len(ids)), "data": source, "checkpoint": str(ck.path)}
    if unit == "char":
        result["bits_per_char"] = result["bits_per_token"]
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{source}: loss {loss:.4f} | perplexity {result['perplexity']:.2f} | "
                   f"{result['bits_per_token']:.3f} bits/{unit} | unigram baseline "
                   f"{result['unigram_baseline']:.4f}")
    return 0


# --------------------------------------------------------------------------- backends
@cli.command(name="backends")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def list_backends(as_json):
    """List the backends and whether each can run here (and why not).

    \b
    Example:
      tinylm backends
    """
    rows = []
    for name, ok, reason in backends.available_backends():
        detail = backends.describe(name) if ok else reason
        rows.append({"name": name, "available": ok, "detail": detail})
    if as_json:
        click.echo(json.dumps(rows))
    else:
        for r in rows:
            click.echo(f"{r['name']:<8} {'yes' if r['available'] else 'no ':<4} {r['detail']}")
    return 0


if __name__ == "__main__":
    main()
