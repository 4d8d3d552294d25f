"""Classification fine-tuning: labelled files and their bad rows, scores, the classifier, the CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tinylm.checkpoint import load_checkpoint
from tinylm.classify import (classification_report, finetune, load_classifier, pad_batch,
                             predict)
from tinylm.cli import cli
from tinylm.errors import ConfigError, DataError
from tinylm.labelled import read_labelled
from tinylm.models import (ClassifierConfig, EncoderConfig, GPTConfig, SequenceClassifier)
from tinylm.models.classifier import PAD
from tinylm.run import new_run
from tinylm.train import TrainConfig

# A sentiment-like task: the label is which word list the one opinion word comes from.
POSITIVE = ["good", "great", "happy", "love", "nice"]
NEGATIVE = ["bad", "awful", "sad", "hate", "poor"]
FILLER = ["the", "movie", "was", "a", "day", "it", "is", "very", "and", "plot", "actors", "so"]


def sentiment_rows(n: int, seed: int) -> list[dict]:
    """60% positive, so always answering 'pos' scores about 0.6 (the majority baseline)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = "pos" if rng.random() < 0.6 else "neg"
        words = list(rng.choice(FILLER, size=rng.integers(2, 5)))
        words.insert(rng.integers(0, len(words) + 1), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path, text):
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- reading labelled files --------------------------------------------------------------------
def test_csv_bad_rows_are_reported_with_their_line_numbers(tmp_path):
    path = write_csv(tmp_path / "d.csv", b'id,text,label\n1,"hello, world",pos\n2,one column\n'
                     b'3,,neg\n4,"two\nlines",neg\n5,ok,\n6,\xff\xfe,pos\n7,fine,neg\n')
    examples, bad = read_labelled(path)
    assert [(e.line, e.text, e.label) for e in examples] == [
        (2, "hello, world", "pos"), (5, "two\nlines", "neg"), (9, "fine", "neg")]
    assert [(b.line, b.reason.split(" (")[0]) for b in bad] == [
        (3, "2 columns, the header has 3"), (4, "empty text"), (7, "empty label"),
        (8, "not valid UTF-8")]


def test_jsonl_bad_rows_are_reported_with_their_line_numbers(tmp_path):
    path = write_csv(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\nnot json\n'
                     '[1]\n{"text": "  ", "label": "x"}\n\n{"text": "c", "label": "y"}\n')
    examples, bad = read_labelled(path)
    assert [(e.line, e.label) for e in examples] == [(1, "1"), (7, "y")]  # integer labels: strings
    assert [b.line for b in bad] == [2, 3, 4, 5]
    assert "missing field 'label'" in bad[0].reason and "not valid JSON" in bad[1].reason


@pytest.mark.parametrize("content, message", [
    ("text,label\n,x\n", "no usable labelled rows: .*line 2: empty text"),
    ("sentence,class\nhi,x\n", "header must name a 'text' and a 'label' column"),
    ("", "is empty"),
])
def test_unusable_files_are_a_data_error(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        read_labelled(write_csv(tmp_path / "d.csv", content))


# -- scores ------------------------------------------------------------------------------------
def test_classification_report_by_hand():
    #          true: a a a b b c      predicted: a a b b c c
    y_true, y_pred = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2])
    report = classification_report(y_true, y_pred, ("a", "b", "c"))
    a, b, c = report["classes"]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"], c["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert report["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert report["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


# -- the classifier ----------------------------------------------------------------------------
SIZES = dict(vocab_size=20, block_size=12, n_layer=1, n_head=2, n_embd=16)


@pytest.mark.parametrize("backbone, pooling", [("encoder", "cls"), ("encoder", "mean"),
                                               ("gpt", "last"), ("gpt", "mean")])
def test_a_text_gets_the_same_logits_whatever_it_is_batched_with(backend, backbone, pooling):
    config = (EncoderConfig if backbone == "encoder" else GPTConfig)(**SIZES)
    model = SequenceClassifier(ClassifierConfig(backbone, config.to_dict(), ("x", "y", "z"),
                                                pooling, pad_id=3)).eval()
    short, long = np.array([5, 1, 2]), np.array([4, 4, 7, 8, 9, 1, 2, 3])
    batch = pad_batch([short, long])
    assert (batch[0, 3:] == PAD).all()
    together, _ = model(batch)
    alone, _ = model(short[None, :])
    np.testing.assert_allclose(together.numpy()[0], alone.numpy()[0], rtol=1e-5, atol=1e-6)


def test_cls_pooling_needs_an_encoder():
    with pytest.raises(ConfigError, match="use --pooling last"):
        ClassifierConfig("gpt", GPTConfig(**SIZES).to_dict(), ("x", "y"), "cls")


# -- fine-tuning beats the majority class --------------------------------------------------------
@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentiment")
    return (write_jsonl(root / "train.jsonl", sentiment_rows(800, seed=1)),
            write_jsonl(root / "val.jsonl", sentiment_rows(100, seed=2)))


def pretrained(tmp_path, objective, steps):
    config = TrainConfig(batch_size=16, max_iters=steps, learning_rate=3e-3, min_lr=3e-4,
                         warmup_iters=10, eval_interval=steps, eval_iters=2, seed=1)
    run = new_run(dict(block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True),
                  config, None, 0.1, tmp_path / objective, objective)
    run.execute()
    return tmp_path / objective


FINETUNE = TrainConfig(batch_size=16, max_iters=200, learning_rate=2e-3, min_lr=2e-4,
                       warmup_iters=10, weight_decay=0.01, eval_interval=100, eval_iters=2, seed=1)


@pytest.mark.parametrize("objective, pooling", [("mlm", "cls"), ("clm", "last")])
def test_finetuning_beats_the_majority_class(backend, tmp_path, sentiment, objective, pooling):
    ckpt = pretrained(tmp_path, objective, steps=40)
    result = finetune(ckpt, *sentiment, tmp_path / "clf", FINETUNE, pooling)
    report = result.report
    majority = report["majority_baseline"]
    assert majority["label"] == "pos" and 0.5 < majority["accuracy"] < 0.7
    # measured (numpy): encoder+cls 0.88, gpt+last 0.86-0.9 against a baseline of 0.53
    assert report["accuracy"] >= majority["accuracy"] + 0.2, report
    assert report["macro_f1"] > 0.7

    model, tokenizer, ckpt = load_classifier(tmp_path / "clf")
    assert ckpt.train["finetune"]["report"]["accuracy"] == report["accuracy"]
    (guess,), _ = predict(model, tokenizer, ["the plot was great"])
    assert sum(guess["probabilities"].values()) == pytest.approx(1.0)


# -- the command line --------------------------------------------------------------------------
def test_cli_finetune_and_classify(tmp_path, sentiment):
    encoder = pretrained(tmp_path, "mlm", steps=2)
    train_file = write_csv(tmp_path / "train.csv", "text,label\n" + "".join(
        f"{r['text']},{r['label']}\n" for r in sentiment_rows(60, seed=3))
        + ",neg\ntoo,many,columns\n" + "x" * 40 + ",pos\n")   # lines 62, 63: bad; 64: truncated
    val_file = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(20, seed=4)
                           + [{"text": "new label", "label": "meh"}])
    args = ["finetune", "--ckpt", encoder, "--train", train_file, "--val", val_file, "--out",
            tmp_path / "clf", "--max-iters", "4", "--batch-size", "8", "--eval-interval", "2"]
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert {"accuracy", "macro_f1", "classes", "majority_baseline"} <= set(scores)
    assert "line 62: empty text" in result.stderr and "line 63: 3 columns" in result.stderr
    assert "line 21: label 'meh' does not occur in the training data" in result.stderr
    assert "text(s) longer than block_size 32 tokens were truncated" in result.stderr

    table = run(*args, "--overwrite")
    assert table.exit_code == 0 and "precision  recall" in table.stdout and "macro-F1" in table.stdout

    strict = run(*args, "--overwrite", "--strict")
    last = strict.stderr.strip().splitlines()[-1]  # after the resolved config
    assert strict.exit_code == 1 and last.startswith("error: ") and "line 62" in last
    assert "Traceback" not in strict.output

    labelled = run("classify", "--ckpt", tmp_path / "clf", "so good", "very sad")
    assert labelled.exit_code == 0, labelled.output
    lines = labelled.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in ("pos", "neg")
    assert lines[0].endswith("\tso good") and "pos 0." in lines[0] and "neg 0." in lines[0]
    as_json = json.loads(run("classify", "--ckpt", tmp_path / "clf", "--json", "nice").stdout)
    assert set(as_json[0]["probabilities"]) == {"neg", "pos"}

    not_a_classifier = run("classify", "--ckpt", encoder, "hello")
    assert not_a_classifier.exit_code == 1 and "tinylm finetune" in not_a_classifier.stderr
    assert load_checkpoint(tmp_path / "clf").model_type == "classifier"
    no_lm_loss = run("eval", "--ckpt", tmp_path / "clf")
    assert no_lm_loss.exit_code == 2 and "no language-model loss" in no_lm_loss.stderr
