"""tinylm's command line: a thin click layer over the library.

    tinylm train                      # train a small GPT on the offline default corpus
    tinylm sample --ckpt out          # generate text from it
    tinylm eval --ckpt out            # validation loss, perplexity, unigram baseline
    tinylm backends                   # which backends run here, and why not

Results go to stdout, progress and diagnostics to stderr. Bad input gets one
line on stderr and a non-zero exit (2: usage, 1: runtime), never a traceback.
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import sys
import tomllib
from dataclasses import asdict, fields
from pathlib import Path

import click

from tinylm import backends
from tinylm.errors import ConfigError, TinyLMError
from tinylm.models import GPTConfig
from tinylm.classify import FINETUNE_DEFAULTS
from tinylm.lab.grokking import GrokkingConfig
from tinylm.lab.induction import InductionConfig
from tinylm.lab.scaling import ScalingConfig
from tinylm.train import TrainConfig

# Named presets: model and training fields (nanoGPT's names and values).
PRESETS = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=32, batch_size=8, max_iters=200,
                 eval_interval=100, eval_iters=10, warmup_iters=20),
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, max_iters=2000,
                learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, beta2=0.99, dropout=0.0,
                eval_interval=250, eval_iters=20),
    "shakespeare": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64,
                        max_iters=5000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
                        beta2=0.99, dropout=0.2, eval_interval=250, eval_iters=200),
}
DEFAULT_PRESET = "cpu"
MODEL_FIELDS = [f for f in fields(GPTConfig) if f.name != "vocab_size"]  # vocab comes from the data
TRAIN_FIELDS = list(fields(TrainConfig))


SHRINK = "try a smaller --batch-size, --block-size or model (--n-layer, --n-embd)"


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


class TinyLMGroup(click.Group):
    """Turns every anticipated failure into one line on stderr and an exit code."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        try:
            rv = super().main(args=args, prog_name=prog_name or "tinylm",
                              standalone_mode=False, **extra)
        except click.exceptions.Abort:
            _echo_err("aborted")
            sys.exit(130)
        except click.UsageError as exc:
            where = f"; see 'tinylm {exc.ctx.info_name} --help'" if exc.ctx and exc.ctx.parent else \
                "; see 'tinylm --help'"
            _echo_err(f"error: {exc.format_message()}{where}")
            sys.exit(2)
        except click.ClickException as exc:
            _echo_err(f"error: {exc.format_message()}")
            sys.exit(exc.exit_code)
        except TinyLMError as exc:
            _echo_err(f"error: {exc}")
            sys.exit(exc.exit_code)
        except MemoryError:
            _echo_err(f"error: out of memory; {SHRINK}")
            sys.exit(1)
        except OSError as exc:
            _echo_err(f"error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
            sys.exit(1)
        except Exception as exc:
            # CuPy's cupy.cuda.memory.OutOfMemoryError, matched by name so cupy is never imported
            if type(exc).__name__ != "OutOfMemoryError":
                raise
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "allocation failed"
            _echo_err(f"error: out of GPU memory ({detail}); {SHRINK}")
            sys.exit(1)
        except KeyboardInterrupt:
            _echo_err("interrupted")
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


# --------------------------------------------------------------------------- shared
def backend_option(f):
    f = click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads for the backend's kernels (numba).")(f)
    return click.option("--backend", default="numpy", show_default=True,
                        help="Array backend: numpy, numba or cupy (see 'tinylm backends').")(f)


def activate_backend(name: str, threads: int | None):
    backend = backends.set_backend(name)
    if threads:
        backend.set_threads(threads)
    compile_s = getattr(backend, "compile_seconds", None)
    if compile_s:
        _echo_err(f"backend {backend.name}: kernels ready in {compile_s:.1f} s (JIT, not training time)")
    return backend


def ckpt_option(f):
    return click.option("--ckpt", required=True, type=click.Path(),
                        help="Run directory written by 'tinylm train --out' (or its .safetensors file).")(f)


# --------------------------------------------------------------------------- train
def _config_options(f):
    """One option per config field: --n-layer -> n_layer (nanoGPT's names)."""
    for fld in reversed(MODEL_FIELDS + TRAIN_FIELDS):
        kind = {int: click.INT, float: click.FLOAT, bool: click.BOOL}[type(fld.default)]
        f = click.option(f"--{fld.name.replace('_', '-')}", fld.name, type=kind, default=None,
                         help=f"[{PRESETS[DEFAULT_PRESET].get(fld.name, fld.default)}]")(f)
    return f


def read_toml(path: str) -> dict:
    """Flat ``key = value`` pairs (or [model]/[train] tables) naming config fields."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: not UTF-8 at byte {exc.start}") from None
    except RecursionError:
        raise ConfigError(f"{path} is not valid TOML: nested too deeply") from None
    flat = {}
    for key, value in doc.items():
        flat.update(value if isinstance(value, dict) else {key: value})
    known = {f.name for f in MODEL_FIELDS + TRAIN_FIELDS} | {"preset", "data", "val_fraction"}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; valid keys are the train options "
                          "with '_' for '-' (e.g. n_layer, learning_rate)")
    if "preset" in flat and (not isinstance(flat["preset"], str) or flat["preset"] not in PRESETS):
        raise ConfigError(f"{path}: preset must be one of {sorted(PRESETS)}, got {flat['preset']!r:.40}")
    if "data" in flat and not isinstance(flat["data"], str):
        raise ConfigError(f"{path}: data must be a path in quotes, got {flat['data']!r:.40}")
    fraction = flat.get("val_fraction", 0.5)
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction < 1:
        raise ConfigError(f"{path}: val_fraction must be a number in (0, 1), got {fraction!r:.40}")
    return flat


def resolve_config(preset: str | None, toml_values: dict, cli_values: dict) -> tuple[dict, TrainConfig]:
    """defaults < preset < TOML file < command line; returns (model fields, train config)."""
    merged = dict(PRESETS[preset or toml_values.get("preset") or DEFAULT_PRESET])
    merged.update({k: v for k, v in toml_values.items() if k not in ("preset", "data", "val_fraction")})
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    model = {f.name: merged.get(f.name, f.default) for f in MODEL_FIELDS}
    train = TrainConfig(**{f.name: merged[f.name] for f in TRAIN_FIELDS if f.name in merged})
    GPTConfig(**model)  # validate now, before any data is read
    return model, train


class Progress:
    """Renders training events on stderr: one updating line on a terminal, log lines otherwise."""

    def __init__(self, max_iters: int, baseline: float | None):
        self.max_iters, self.baseline = max_iters, baseline
        self.tty = sys.stderr.isatty()
        self.every = max(1, max_iters // 20)  # log lines (not a terminal): about 20 per run
        self.last_logged = 0

    def __call__(self, e: dict) -> None:
        if e["event"] == "step":
            done = e["step"] / self.max_iters
            eta = (self.max_iters - e["step"]) * e["ms_per_iter"] / 1e3
            line = (f"step {e['step']:>6}/{self.max_iters} {100 * done:3.0f}% | loss {e['loss']:.4f} "
                    f"| lr {e['lr']:.2e} | {e['ms_per_iter']:.0f} ms/it "
                    f"| {e['tokens_per_s'] / 1e3:.1f}k tok/s | eta {int(eta // 60)}:{int(eta % 60):02d}")
            if self.tty:
                click.echo("\r" + line.ljust(100), nl=False, err=True)
            elif e["step"] - self.last_logged >= self.every or e["step"] == self.max_iters:
                self.last_logged = e["step"]
                _echo_err(line)
        elif e["event"] == "eval":
            base = f" (unigram baseline {self.baseline:.3f})" if self.baseline else ""
            prefix = "\n" if self.tty else ""
            _echo_err(f"{prefix}step {e['step']}: train loss {e['train_loss']:.4f}, "
                      f"val loss {e['val_loss']:.4f}{base}")


class StopOnSignal:
    """First SIGINT/SIGTERM: finish the step, save, exit 0. A second SIGINT aborts at once."""

    def __init__(self):
        self.requested = False

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        _echo_err(f"\n{signal.Signals(signum).name}: finishing this step and saving a checkpoint "
                  "(Ctrl-C again to abort without saving)")

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


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
              help="Run directory for the checkpoint.")
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
@backend_option
@_config_options
def train(preset, config_file, data, val_fraction, out, resume, overwrite, distributed,
          dist_timeout, objective, tokenizer_file, backend, threads, **values):
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
    """
    from tinylm.distributed import SingleProcess, connect

    comm = connect(backend, dist_timeout) if distributed else SingleProcess()  # NCCL picks the GPU
    with comm.abort_on_error():
        return _train(comm, preset, config_file, data, val_fraction, out, resume, overwrite,
                      backend, threads, values, objective, tokenizer_file)


def _train(comm, preset, config_file, data, val_fraction, out, resume, overwrite, backend,
           threads, values, objective=None, tokenizer_file=None):
    """`tinylm train` on one rank: rank 0 reports and saves, the others stay quiet."""
    from tinylm.checkpoint import checkpoint_path
    from tinylm.data import unigram_entropy
    from tinylm.distributed import SingleProcess, replicate
    from tinylm.run import new_run, resume_run
    from tinylm.tokenizers import load_tokenizer

    say = _echo_err if comm.rank == 0 else (lambda message: None)
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
        say(f"resuming {run.out} at step {run.state.step}")
    else:
        if checkpoint_path(out).exists() and not overwrite:
            raise ConfigError(f"{out} already holds a checkpoint; pass --resume to continue it, "
                              "--overwrite to replace it, or another --out")
        model_fields, train_config = resolve_config(preset, toml_values, values)
        tokenizer = load_tokenizer(tokenizer_file) if tokenizer_file else None
        run = new_run(model_fields, train_config, data, val_fraction, out, objective or "clm",
                      tokenizer=tokenizer)
    if run.objective != "clm" and not isinstance(comm, SingleProcess):
        raise ConfigError("--distributed trains the clm objective only; drop --distributed")
    replicate(run.state, run.train_config, comm)  # rank 0's weights everywhere; a batch stream per rank
    baseline = unigram_entropy(run.val_ids, run.tokenizer.vocab_size)
    n_params = run.state.model.num_parameters()
    say(f"data: {run.corpus.source} ({len(run.corpus.text):,} chars, vocab "
        f"{run.tokenizer.vocab_size}); backend {backends.current().name}")
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
        _echo_err(f"stopped at step {state.step}; checkpoint saved in {run.out}. Resume with: "
                  f"tinylm train --resume --out {shlex.quote(str(run.out))}")
        return 0
    step, train_loss, val_loss = state.history[-1]
    click.echo(f"done: {step} steps, train loss {train_loss:.4f}, val loss {val_loss:.4f} "
               f"(unigram baseline {baseline:.4f}); checkpoint: {run.out}")
    if run.objective == "mlm":
        _echo_err(f"fine-tune it with: tinylm finetune --ckpt {run.out} --train FILE --val FILE")
    else:
        _echo_err(f"sample from it with: tinylm sample --ckpt {run.out}")
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
    """Loss, perplexity and bits per character of a checkpoint on held-out text.

    \b
    Example:
      tinylm eval --ckpt out
      tinylm eval --ckpt out --data other.txt --json
    """
    from tinylm.checkpoint import load_model
    from tinylm.data import unigram_entropy
    from tinylm.resources import check_inference
    from tinylm.run import load_corpus, objective_parts, split_for_training
    from tinylm.train import estimate_loss

    activate_backend(backend, threads)
    model, tokenizer, ck = load_model(ckpt)
    _, _, batch_maker = objective_parts(ck.train.get("objective", "clm"), tokenizer)
    check_inference(model.config, batch_size, backends.current())
    block = model.config.block_size
    if data is None:
        saved = ck.train.get("data") or {}
        corpus = load_corpus(saved.get("path"))
        _, ids = split_for_training(tokenizer.encode(corpus.text), saved.get("val_fraction", 0.1), block)
        source = f"validation split of {corpus.source}"
    else:
        corpus = load_corpus(data)
        ids, source = tokenizer.encode(corpus.text), corpus.source
    loss = estimate_loss(model, ids, block, batch_size, batches, seed=0, batches=batch_maker)
    result = {"loss": loss, "perplexity": math.exp(loss), "bits_per_token": loss / math.log(2),
              "unigram_baseline": unigram_entropy(ids, tokenizer.vocab_size),
              "tokens": int(len(ids)), "data": source, "checkpoint": str(ck.path)}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{source}: loss {loss:.4f} | perplexity {result['perplexity']:.2f} | "
                   f"{result['bits_per_token']:.3f} bits/char | unigram baseline "
                   f"{result['unigram_baseline']:.4f}")
    return 0


# --------------------------------------------------------------------------- finetune
@cli.command()
@ckpt_option
@click.option("--train", "train_file", required=True, type=click.Path(dir_okay=False),
              help="Labelled texts: CSV with a 'text,label' header, or JSONL {\"text\", \"label\"}.")
@click.option("--val", "val_file", required=True, type=click.Path(dir_okay=False),
              help="Labelled texts to score on (same formats); labels must occur in --train.")
@click.option("--out", default="finetuned", show_default=True, type=click.Path(file_okay=False),
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
    from tinylm.classify import finetune as run_finetune, format_report

    activate_backend(backend, threads)
    if checkpoint_path(out).exists() and not overwrite:
        raise ConfigError(f"{out} already holds a checkpoint; pass --overwrite to replace it, "
                          "or another --out")
    given = {k: v for k, v in values.items() if v is not None}
    if "learning_rate" in given:  # keep the schedule's floor below a user's rate
        given.setdefault("min_lr", given["learning_rate"] / 10)
    train_config = TrainConfig(**{**FINETUNE_DEFAULTS, **given})
    _echo_err(f"finetune: {json.dumps(train_config.to_dict())}")
    with StopOnSignal() as stop:
        result = run_finetune(ckpt, train_file, val_file, out, train_config, pooling, strict,
                              on_event=Progress(train_config.max_iters, None),
                              warn=lambda m: _echo_err(f"warning: {m}"),
                              stop_requested=lambda: stop.requested)
    if as_json:
        click.echo(json.dumps({**result.report, "checkpoint": str(result.path)}))
    else:
        click.echo(format_report(result.report))
    _echo_err(f"classifier saved in {out}; use it with: tinylm classify --ckpt {out} \"some text\"")
    return 0


@cli.command()
@ckpt_option
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
        _echo_err(f"warning: {truncated} text(s) longer than block_size {model.config.block_size} "
                  "tokens were truncated to their beginning")
    if as_json:
        click.echo(json.dumps(results))
        return 0
    for r in results:
        ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
        click.echo(f"{r['label']}\t" + "  ".join(f"{k} {p:.3f}" for k, p in ranked) + f"\t{r['text']}")
    return 0


# --------------------------------------------------------------------------- tokenizer
@cli.group()
def tokenizer():
    """Byte-level BPE tokenizers (GPT-2's kind): train one, look at what it does.

    \b
    Example:
      tinylm tokenizer train --data input.txt --vocab-size 2048 --out tok.json
      tinylm train --data input.txt --tokenizer tok.json
    """


@tokenizer.command(name="train")
@click.option("--data", type=click.Path(), default=None,
              help="Text file or directory to learn from [offline default corpus].")
@click.option("--vocab-size", type=click.IntRange(min=257), default=2048, show_default=True,
              help="Tokens in all: 256 bytes + merges + special tokens.")
@click.option("--special", "specials", multiple=True,
              help="Special token; repeatable [<|endoftext|>].")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
def tokenizer_train(data, vocab_size, specials, out):
    """Learn BPE merges from a corpus and write the tokenizer as JSON.

    \b
    Example:
      tinylm tokenizer train --data input.txt --vocab-size 1024 --out tok.json
      tinylm tokenizer train --vocab-size 512 --special "<|endoftext|>" --special "[SEP]" --out t.json
    """
    import time

    from tinylm.bpe import DEFAULT_SPECIAL_TOKENS, train_bpe
    from tinylm.run import load_corpus
    from tinylm.tokenizers import save_tokenizer

    corpus = load_corpus(data)
    _echo_err(f"data: {corpus.source}")
    start = time.perf_counter()

    def progress(done, total):
        _echo_err(f"merges {done}/{total} ({time.perf_counter() - start:.1f} s)")
    tok = train_bpe(corpus.text, vocab_size, specials or DEFAULT_SPECIAL_TOKENS, on_progress=progress)
    trained_s = time.perf_counter() - start
    save_tokenizer(tok, out)
    n_tokens = len(tok.encode(corpus.text))
    click.echo(f"wrote {out}: vocab {tok.vocab_size} ({len(tok.merges)} merges, special "
               f"{list(tok.special_tokens)}), trained in {trained_s:.1f} s; "
               f"{len(corpus.text) / max(n_tokens, 1):.2f} chars/token on the data")
    if tok.vocab_size < vocab_size:
        _echo_err(f"stopped at {tok.vocab_size} tokens: no pair of tokens occurs twice any more")
    return 0


@tokenizer.command(name="encode")
@click.option("--tokenizer", "tokenizer_file", required=True, type=click.Path(dir_okay=False))
@click.argument("text")
def tokenizer_encode(tokenizer_file, text):
    """Print the token ids of TEXT and the piece of text each stands for.

    \b
    Example:
      tinylm tokenizer encode --tokenizer tok.json "Hello world"
    """
    from tinylm.tokenizers import load_tokenizer

    tok = load_tokenizer(tokenizer_file)
    ids = tok.encode(text)
    click.echo(" ".join(str(i) for i in ids))
    click.echo(" | ".join(repr(tok.decode([i])) for i in ids))
    return 0


# --------------------------------------------------------------------------- GPT-2
@cli.command(name="import-gpt2")
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
    from tinylm.checkpoint import checkpoint_path
    from tinylm.gpt2 import import_gpt2 as convert

    if checkpoint_path(out).exists() and not overwrite:
        raise ConfigError(f"{out} already holds a checkpoint; pass --overwrite or another --out")
    path = convert(directory, out)
    click.echo(f"wrote {path}")
    return 0


@cli.command(name="export-gpt2")
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
        _echo_err(f"no vocab.json/merges.txt: the run's tokenizer ({type(tokenizer).__name__}) is not "
                  "byte-level BPE; train one with 'tinylm tokenizer train' and 'tinylm train --tokenizer'")
    return 0


# --------------------------------------------------------------------------- inspect and lab
def _field_options(config_cls, skip=()):
    """One option per field of a lab config dataclass: --max-iters -> max_iters (default: the field's)."""
    def decorate(f):
        for fld in reversed(fields(config_cls)):
            if fld.name in skip:
                continue
            kind = {int: click.INT, float: click.FLOAT}[type(fld.default)]
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
        _echo_err(PLOT_HINT)
    for path in [written["json"], *(written["plots"] or [])]:
        click.echo(f"wrote {path}")


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
            _echo_err(line)


@cli.group(name="inspect")
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
@_lab_out_option("inspect/attention")
@backend_option
def inspect_attention(ckpt, prompt, out, backend, threads):
    """Attention of every layer and head on a prompt: one heatmap grid, tokens on the axes.

    \b
    Example:
      tinylm inspect attention --ckpt out --prompt "for i in range(10):" --out inspect/attn
    """
    from tinylm.checkpoint import load_model
    from tinylm.lab import heads, plots

    activate_backend(backend, threads)
    model, tokenizer, ck = load_model(ckpt)
    heads.require_gpt(model, ck.path)
    results = {"experiment": "inspect-attention", "checkpoint": str(ck.path), "prompt": prompt,
               **heads.inspect_attention(model, tokenizer, prompt)}
    _echo_err(f"{len(results['tokens'])} tokens, {results['n_layer']} layers x "
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
@_lab_out_option("inspect/ablate")
@backend_option
def inspect_ablate(ckpt, data, mode, batches, batch_size, seed, out, backend, threads):
    """Knock out each attention head in turn; table of the validation-loss change per layer x head.

    \b
    Example:
      tinylm inspect ablate --ckpt out --mode mean --out inspect/ablate
    """
    from tinylm.checkpoint import load_model
    from tinylm.lab import heads, plots

    activate_backend(backend, threads)
    model, tokenizer, ck = load_model(ckpt)
    heads.require_gpt(model, ck.path)
    ids, source = heads.held_out_ids(ck, tokenizer, data)
    _echo_err(f"data: {source}; {mode}-ablating {len(model.blocks)} x "
              f"{model.blocks[0].attn.n_head} heads")
    results = heads.inspect_ablation(model, ids, batch_size, batches, mode, seed,
                                     on_progress=lambda d, t: _echo_err(f"head {d}/{t}"))
    results.update(experiment="inspect-ablate", checkpoint=str(ck.path), data=source, seed=seed)
    click.echo(f"loss {results['base_loss']:.4f} with every head; change when one head is "
               f"{mode}-ablated:")
    click.echo("layer " + "".join(f"{'head ' + str(h + 1):>10}" for h in range(len(results["delta"][0]))))
    for layer, row in enumerate(results["delta"]):
        click.echo(f"{layer + 1:>5} " + "".join(f"{d:>+10.4f}" for d in row))
    _write_lab_report(out, results, {"ablation": plots.ablation_heatmap})
    return 0


@cli.group(name="lab")
def lab_group():
    """Experiments on emergence, minutes each: induction heads, grokking, scaling laws.

    \b
    Example:
      tinylm lab induction --out lab/induction
      tinylm lab grokking --out lab/grokking
      tinylm lab scaling --out lab/scaling
    """


def _lab_run_options(default_out: str):
    def decorate(f):
        return _lab_out_option(default_out)(backend_option(f))
    return decorate


@lab_group.command(name="induction")
@_field_options(InductionConfig)
@_lab_run_options("lab/induction")
def lab_induction(out, backend, threads, **values):
    """Induction heads: a 2-layer attention-only model's phase change on repeated random tokens.

    Trains the model and a 1-layer control; prints the signature (copied/random
    loss ratio, best layer-2 induction score) and writes results.json and induction.png.

    \b
    Example:
      tinylm lab induction --out lab/induction          # ~3 min on 2 CPU cores
    """
    from tinylm.lab import plots
    from tinylm.lab.induction import InductionConfig, run_induction

    activate_backend(backend, threads)
    cfg = InductionConfig(**{k: v for k, v in values.items() if v is not None})
    _echo_err(f"induction: {json.dumps(asdict(cfg))}; backend {backends.current().name}")
    progress = LabProgress(cfg.max_iters, lambda e: (
        f"{e['n_layer']}-layer | random-token loss {e['random_loss']:.3f} | copied-token loss "
        f"{e['copied_loss']:.3f} | best last-layer induction score {max(e['induction_scores'][-1]):.2f}"))
    results = run_induction(cfg, progress)
    sig = results["signature"]
    click.echo(f"{cfg.n_layer}-layer: copied/random loss {sig['copied_over_random']:.3f}, best "
               f"layer-{cfg.n_layer} induction score {sig['best_induction_score']:.2f}, loss drop "
               f"at step {sig['phase_change_step']}, score jump at step {sig['induction_jump_step']}")
    click.echo(f"layer 1: best previous-token score {sig['previous_token_score']:.2f}")
    click.echo(f"1-layer control: copied/random loss {sig['control_copied_over_random']:.3f}")
    click.echo(f"signature {'reproduced' if sig['holds'] else 'NOT reproduced'} "
               f"in {results['seconds']:.0f} s")
    _write_lab_report(out, results, {"induction": plots.induction_curves})
    return 0


@lab_group.command(name="grokking")
@_field_options(GrokkingConfig)
@_lab_run_options("lab/grokking")
def lab_grokking(out, backend, threads, **values):
    """Grokking: modular addition learnt long after it is memorised, under weight decay.

    Trains a 1-layer transformer on a fraction of the table a + b (mod p), with
    weight decay and without (the control); on --backend cupy the defaults are larger.

    \b
    Example:
      tinylm lab grokking --out lab/grokking             # ~5 min on 2 CPU cores
      tinylm lab grokking --backend cupy --out lab/grokking-gpu
    """
    from tinylm.lab import plots
    from tinylm.lab.grokking import GPU_DEFAULTS, run_grokking

    activate_backend(backend, threads)
    defaults = GPU_DEFAULTS if backends.current().name == "cupy" else {}
    cfg = GrokkingConfig(**{**defaults, **{k: v for k, v in values.items() if v is not None}})
    _echo_err(f"grokking: {json.dumps(asdict(cfg))}; backend {backends.current().name}")
    progress = LabProgress(cfg.max_iters, lambda e: (
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
    click.echo(f"signature {'reproduced' if sig['holds'] else 'NOT reproduced'} "
               f"in {results['seconds']:.0f} s")
    _write_lab_report(out, results, {"grokking": plots.grokking_curves})
    return 0


@lab_group.command(name="scaling")
@_field_options(ScalingConfig)
@click.option("--data", type=click.Path(), default=None,
              help="Text file or directory [offline default corpus].")
@click.option("--sizes", type=click.IntRange(min=3), default=None,
              help="Use the first N sizes of the ladder [5 on CPU, 7 on cupy].")
@_lab_run_options("lab/scaling")
def lab_scaling(data, sizes, out, backend, threads, **values):
    """Scaling law: a ladder of GPT sizes on the same tokens, fitted to L(N) = a N^-alpha + c.

    \b
    Example:
      tinylm lab scaling --out lab/scaling               # ~6 min on 2 CPU cores
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
    _echo_err(f"scaling: {json.dumps(asdict(cfg))}; {len(ladder)} sizes, {cfg.tokens:,} tokens "
              f"each; data {corpus.source}; backend {backends.current().name}")

    def progress(e):
        if e["event"] == "start":
            _echo_err(f"[{e['index'] + 1}/{e['total']}] {e['name']}: {e['params']:,} parameters")
        elif e["event"] == "done":
            _echo_err(f"  val loss {e['val_loss']:.4f} ({e['seconds']:.0f} s)")
    results = run_scaling(cfg, corpus, ladder, progress)
    click.echo(f"{'model':<10}{'params':>10}{'FLOPs':>11}{'val loss':>10}")
    for r in results["models"]:
        click.echo(f"{r['name']:<10}{r['params']:>10,}{r['train_flops']:>11.2e}{r['val_loss']:>10.4f}")
    fit, sig = results["fit"], results["signature"]
    click.echo(f"fit: L(N) = {fit['a']:.3g} N^-{fit['alpha']:.3f} + {fit['c']:.3f}, "
               f"R² {fit['r2']:.3f}; monotonic: {sig['monotonic']}")
    click.echo(f"signature {'reproduced' if sig['holds'] else 'NOT reproduced'} "
               f"in {results['seconds']:.0f} s")
    _write_lab_report(out, results, {"scaling": plots.scaling_laws})
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
