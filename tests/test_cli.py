"""The CLI as a user runs it: train, sample, eval, backends, and one-line errors for bad input."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinylm.cli import cli

TEXT = "".join(f"{i} little pigs went to market, {i * 3 % 7} came home\n" for i in range(200))
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--batch-size", "4", "--max-iters", "6", "--eval-interval", "3", "--eval-iters", "2",
        "--warmup-iters", "1"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run directory with a checkpoint trained by `tinylm train`."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "pigs.txt"
    data.write_text(TEXT)
    result = run("train", "--data", data, "--out", root / "run", *TINY)
    assert result.exit_code == 0, result.output
    return root


def assert_one_line_error(result, *fragments, code=None):
    assert result.exit_code != 0
    if code is not None:
        assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_train_prints_config_progress_and_result(trained):
    result = run("train", "--data", trained / "pigs.txt", "--out", trained / "again", *TINY)
    assert result.exit_code == 0
    assert '"n_layer": 1' in result.stderr            # resolved config shown before the run
    assert "val loss" in result.stderr and "ms/it" in result.stderr
    assert result.stdout.startswith("done: 6 steps")
    assert (trained / "again" / "checkpoint.safetensors").exists()


def test_train_refuses_to_overwrite_a_checkpoint(trained):
    result = run("train", "--data", trained / "pigs.txt", "--out", trained / "run", *TINY)
    assert_one_line_error(result, "already holds a checkpoint", "--resume", code=2)


def test_an_invalid_option_is_reported_before_a_leftover_checkpoint(trained):
    # as after README command 1: `out/` in the working directory holds a checkpoint
    shutil.copytree(trained / "run", Path.cwd() / "out")
    assert_one_line_error(run("train", "--n-embd", "65"), "n_embd (65)", "divisible by n_head", code=2)
    assert_one_line_error(run("train", *TINY), "out already holds a checkpoint", code=2)


def test_sample_continues_the_prompt(trained):
    result = run("sample", "--ckpt", trained / "run", "--prompt", "3 little", "--num-tokens", "20",
                 "--seed", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("3 little")
    assert len(result.stdout.rstrip("\n")) == len("3 little") + 20


def test_sample_is_reproducible_with_a_seed(trained):
    a = run("sample", "--ckpt", trained / "run", "--num-tokens", "30", "--seed", "5")
    b = run("sample", "--ckpt", trained / "run", "--num-tokens", "30", "--seed", "5")
    assert a.stdout == b.stdout


def test_eval_reports_loss_against_the_unigram_baseline(trained):
    result = run("eval", "--ckpt", trained / "run", "--json", "--batches", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["loss"] > 0 and report["unigram_baseline"] > 0
    assert report["perplexity"] == pytest.approx(2.718281828 ** report["loss"])
    # a character tokenizer: a token is a character, so bits per token are bits per character
    assert report["unit"] == "char" and report["bits_per_char"] == report["bits_per_token"]
    assert "bits/char" in run("eval", "--ckpt", trained / "run", "--batches", "2").stdout


def test_the_start_up_line_gives_the_corpus_size_once(trained):
    result = run("train", "--data", trained / "pigs.txt", "--out", trained / "sized", *TINY)
    data_line = next(line for line in result.stderr.splitlines() if line.startswith("data: "))
    assert data_line.count("characters") == 1 and "chars," not in data_line, data_line
    assert f"{len(TEXT):,} characters" in data_line and "vocab" in data_line


def test_resume_continues_to_a_larger_max_iters(trained):
    result = run("train", "--resume", "--out", trained / "run", "--max-iters", "8")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr and result.stdout.startswith("done: 8 steps")


def test_backends_lists_numpy_as_available():
    rows = json.loads(run("backends", "--json").stdout)
    assert {"name": "numpy", "available": True} == {k: rows[0][k] for k in ("name", "available")}
    assert all(r["detail"] for r in rows)  # every unavailable backend says why


@pytest.mark.parametrize("command", ["train", "sample", "eval", "backends"])
def test_every_help_has_an_example(command):
    result = run(command, "--help")
    assert result.exit_code == 0 and "Example" in result.output


@pytest.mark.parametrize("args, fragments, code", [
    (["train", "--n-embd", "65", "--n-head", "4"], ["n_embd (65)", "divisible by n_head (4)"], 2),
    (["train", "--n-layer", "0"], ["n_layer", "positive"], 2),
    (["train", "--learning-rate", "0"], ["learning_rate"], 2),
    (["train", "--backend", "tpu"], ["unknown backend 'tpu'"], 1),
    (["train", "--data", "/nonexistent/file.txt"], ["does not exist"], 1),
    (["train", "--bogus"], ["No such option"], 2),
    (["sample", "--ckpt", "/nonexistent/run"], ["no checkpoint"], 1),
    (["sample", "--ckpt", "."], ["no checkpoint"], 1),
])
def test_bad_input_gets_one_line_and_an_exit_code(args, fragments, code):
    assert_one_line_error(run(*args), *fragments, code=code)


def test_data_problems_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = tmp_path / "short.txt"
    short.write_text("too short")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"hello \xff\xfe world" * 10)
    assert_one_line_error(run("train", "--data", empty, *TINY), "empty", code=1)
    assert_one_line_error(run("train", "--data", short, *TINY), "block_size", code=1)
    assert_one_line_error(run("train", "--data", binary, *TINY), "UTF-8", code=1)


def test_corrupt_checkpoint_is_a_one_line_error(trained, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    data = (trained / "run" / "checkpoint.safetensors").read_bytes()
    (broken / "checkpoint.safetensors").write_bytes(data[: len(data) // 2])
    assert_one_line_error(run("sample", "--ckpt", broken), code=1)


def test_prompt_with_unknown_characters_is_a_one_line_error(trained):
    assert_one_line_error(run("sample", "--ckpt", trained / "run", "--prompt", "Z€"), "does not know", code=1)


def test_toml_config_sets_fields_and_the_command_line_wins(tmp_path, trained):
    config = tmp_path / "c.toml"
    config.write_text("n_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 16\nbatch_size = 4\n"
                      "max_iters = 4\neval_interval = 2\neval_iters = 1\nwarmup_iters = 1\n")
    result = run("train", "--config", config, "--max-iters", "2", "--data", trained / "pigs.txt",
                 "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("done: 2 steps")
    config.write_text("n_layers = 3\n")
    assert_one_line_error(run("train", "--config", config), "unknown key", code=2)
