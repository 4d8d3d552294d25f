"""`tinylm tokenizer train|encode`: byte-level BPE tokenizers."""

from __future__ import annotations

import click

from tinylm.commands.common import echo_err

@click.group()
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
    echo_err(f"data: {corpus.source}")
    start = time.perf_counter()

    def progress(done, total):
        echo_err(f"merges {done}/{total} ({time.perf_counter() - start:.1f} s)")
    tok = train_bpe(corpus.text, vocab_size, specials or DEFAULT_SPECIAL_TOKENS, on_progress=progress)
    trained_s = time.perf_counter() - start
    save_tokenizer(tok, out)
    n_tokens = len(tok.encode(corpus.text))
    click.echo(f"wrote {out}: vocab {tok.vocab_size} ({len(tok.merges)} merges, special "
               f"{list(tok.special_tokens)}), trained in {trained_s:.1f} s; "
               f"{len(corpus.text) / max(n_tokens, 1):.2f} chars/token on the data")
    if tok.vocab_size < vocab_size:
        echo_err(f"stopped at {tok.vocab_size} tokens: no pair of tokens occurs twice any more")
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
