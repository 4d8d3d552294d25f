"""The house map holds: imports go one way (down the layers, no cycles, counting imports
inside functions), only the console entry imports the CLI, and no tracked file names a path
of a development machine.

The import graph is read from the source (every ``import`` statement of every
module in tinylm/ and backends/, wherever it stands), not from what Python
happened to import, so an import inside a function counts as much as one at
the top of a file.
"""

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module_name(path: Path) -> str:
    """tinylm/ops/layers.py -> tinylm.ops.layers; backends/x.py -> tinylm.backends.x (as installed)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "backends":
        parts = ["tinylm", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    # tinylm/cli.py is a link to the console entry cli.py: read it as the module tinylm.cli
    return {_module_name(p): p for top in ("tinylm", "backends") for p in (ROOT / top).rglob("*.py")}


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The tinylm modules that module ``name`` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            # "from a import b": b is a module when a.b is one, else a name in a
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    sources = _sources()
    return {name: _imported(name, path, set(sources)) for name, path in sources.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_reader_sees_imports_inside_functions():
    graph = import_graph()
    assert "tinylm.models.gpt" in graph["tinylm.models.encoder"]          # relative, top level
    assert "tinylm.backends.numba_kernels" in graph["tinylm.backends.numba_backend"]  # in create()
    assert "tinylm.config" in graph["tinylm.cli"]                          # the console entry is read
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    order = ["tinylm.backends.numba_kernels", "tinylm.ops.layers", "tinylm.models.gpt",
             "tinylm.train", "tinylm.commands.lab", "tinylm.cli"]
    assert [_layer(m) for m in order] == list(range(len(LAYERS)))
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = _cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The house map (README.md), bottom up: a module imports only from its own layer or below.
LAYERS = (
    ("backends", lambda m: m == "tinylm.errors" or m.startswith("tinylm.backends")),
    ("ops/tensor", lambda m: m == "tinylm.tensor" or m.startswith("tinylm.ops")),
    ("models/nn", lambda m: m in ("tinylm.nn", "tinylm.optim") or m.startswith("tinylm.models")),
    ("run/train", lambda m: not m.startswith(("tinylm.commands", "tinylm.cli", "tinylm.console"))),
    ("commands", lambda m: m.startswith("tinylm.commands")),
    ("CLI", lambda m: m in ("tinylm.cli", "tinylm.console")),
)


def _layer(module: str) -> int:
    return next(i for i, (_, holds) in enumerate(LAYERS) if holds(module))


def test_imports_go_one_way_down_the_house_map():
    # the package itself (tinylm/__init__.py, a facade that every import runs first) is
    # read for its __version__ by checkpoints: not a layer
    upward = [f"{a} ({LAYERS[_layer(a)][0]}) -> {b} ({LAYERS[_layer(b)][0]})"
              for a, deps in sorted(import_graph().items()) for b in sorted(deps)
              if a != "tinylm" and b != "tinylm" and _layer(b) > _layer(a)]
    assert not upward, "imports reaching up a layer:\n" + "\n".join(upward)


def test_only_the_console_entry_imports_the_cli():
    # tinylm.console is the console script's entry (pyproject.toml): it makes Ctrl-C during
    # start-up one line, then runs the CLI
    importers = sorted(name for name, deps in import_graph().items() if "tinylm.cli" in deps)
    assert importers == ["tinylm.console"], \
        f"{importers} import tinylm.cli; move what they need into the library"
    for path in (ROOT / "bench").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from tinylm\.cli |from tinylm import cli|import cli\b)",
                             source, re.M), f"{path.relative_to(ROOT)} imports the CLI"


# An absolute path of a development machine: a home or scratch directory named in a file.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|home/\w+|tmp|Users/\w+)/")


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [ROOT / name for name in out.stdout.decode().split("\0") if name]


def test_no_tracked_file_names_a_path_of_the_development_machine():
    found = []
    for path in _tracked_files():
        if path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "absolute paths of a machine (name files relative to the repository):\n" + \
        "\n".join(found)


def test_the_path_pattern_finds_machine_paths_and_spares_others():
    slash = "/"  # the examples are built here, so that this file does not name such a path itself
    assert MACHINE_PATH.search(f"see {slash}work{slash}main/bench/out.json")
    assert MACHINE_PATH.search(f"python {slash}root{slash}x.py")
    assert MACHINE_PATH.search(f"cd {slash}tmp{slash}run/")
    assert not MACHINE_PATH.search("bench/README.md and docs/distributed.md")
    assert not MACHINE_PATH.search(f"https://example.org{slash}work{slash}x and .{slash}tmp{slash}x")


# What a reader must hold to know the GPT: the engine, the primitives, the layers, the model,
# the optimizer, the loop and the reference kernels. Variants (LLaMA's layers, the LSTM)
# live in their own model files; the fused backends are read against the reference.
REFERENCE_CORE = ("tinylm/tensor.py", "tinylm/ops/*.py", "tinylm/nn.py", "tinylm/models/gpt.py",
                  "tinylm/optim.py", "tinylm/train.py", "backends/base.py", "backends/numpy_backend.py")


def test_the_reference_core_stays_a_size_a_reader_can_hold():
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
             for pattern in REFERENCE_CORE for path in sorted(ROOT.glob(pattern))}
    assert len(sizes) >= len(REFERENCE_CORE) + 3  # the globs found the files (ops/ has several)
    assert sum(sizes.values()) <= 1500, f"the reference core is {sum(sizes.values())} lines: {sizes}"
    assert sizes["tinylm/models/gpt.py"] <= 170


def test_no_file_a_reader_opens_is_over_400_lines():
    long = {path.relative_to(ROOT).as_posix(): n for pattern in ("tinylm/**/*.py", "backends/**/*.py",
                                                                    "tests/*.py", "cli.py")
            for path in ROOT.glob(pattern)
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"files over 400 lines: {long}"
