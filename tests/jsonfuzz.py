"""A seeded, structured fuzzer for JSON documents: a valid document after 1-3 hostile edits.

An edit picks any node of the document (or the whole) and replaces it with a hostile value
(an integer of up to 5,000 digits, arrays nested up to 100,000 deep, NaN or Infinity, 1e999,
a value of the wrong type), deletes a key (a missing field), adds one (an extra field),
duplicates one, or cuts the text short. Values JSON cannot hold as Python objects are
spliced into the serialised text through placeholders. Deterministic for a given seed.
"""

from __future__ import annotations

import copy
import json
import random

WRONG_TYPES = [None, True, False, 0, -1, 1, 2**31, 2**63, -(2**64), 1.5, -0.0, 1e308, "", "x",
               "../../etc/passwd", "\u0000", [], {}, [1, 2], [[1, 2]], {"a": 1}, ["x"], [None]]


def _wrong(rng: random.Random):
    return copy.deepcopy(rng.choice(WRONG_TYPES))  # a fresh copy: later edits may change it


def _raw(rng: random.Random) -> str:
    """Text that is no Python-made JSON: huge integers, deep nesting, non-JSON numbers."""
    kind = rng.randrange(7)
    if kind == 0:
        return rng.choice("-") * rng.randrange(2) + "9" * rng.choice([21, 41, 300, 4301, 5000])
    if kind == 1:
        depth = rng.choice([65, 200, 1000, 100_000 if rng.random() < 0.2 else 3000])
        return "[" * depth + "]" * depth
    if kind == 2:
        depth = rng.choice([65, 500])
        return '{"a":' * depth + "1" + "}" * depth
    if kind == 3:
        return rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
    if kind == 4:
        return rng.choice(["1.0", "3.000", "2e3", "-0"])  # floats where integers belong
    if kind == 5:
        return '"' + "\\ud800" * rng.randrange(1, 3) + '"'  # lone surrogates
    return '"' + "a" * rng.choice([1, 10_000]) + '"'


def _nodes(value, path=()):
    """Every (path, value) of a document; a path is a tuple of keys and indices."""
    yield path, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _nodes(child, path + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _nodes(child, path + (index,))


def _set(document, path, value):
    if not path:
        return value
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return document


def _pick_node(rng: random.Random, document):
    """A node, with the top levels (where the fields a reader looks at live) more likely."""
    nodes = list(_nodes(document))
    shallow = [n for n in nodes if len(n[0]) <= 2]
    return rng.choice(shallow if shallow and rng.random() < 0.7 else nodes)


def mutant(rng: random.Random, document) -> str:
    """The JSON text of ``document`` after 1-3 hostile edits."""
    document = json.loads(json.dumps(document))
    raws, duplicates = {}, []
    for _ in range(rng.randint(1, 3)):
        path, node = _pick_node(rng, document)
        edit = rng.randrange(6)
        if edit == 0:
            marker = f"\u0001raw{len(raws)}"
            raws[marker] = _raw(rng)
            document = _set(document, path, marker)
        elif edit == 1:
            document = _set(document, path, _wrong(rng))
        elif edit == 2 and isinstance(node, dict) and node:
            del node[rng.choice(list(node))]  # a missing field
        elif edit == 3 and isinstance(node, dict):
            node[rng.choice(["extra", "__proto__", "", "type", "weight_map"])] = _wrong(rng)
        elif edit == 4 and isinstance(node, dict) and node:
            duplicates.append(rng.choice(list(node)))
        elif edit == 5 and isinstance(node, list) and node:
            node.append(copy.deepcopy(rng.choice(node)) if rng.random() < 0.5 else _wrong(rng))
        else:
            document = _set(document, path, _wrong(rng))
    text = json.dumps(document)
    for marker, raw in raws.items():
        text = text.replace(json.dumps(marker), raw)
    for key in duplicates:  # the key again, first in its object: JSON would keep the last
        quoted = json.dumps(key) + ": "
        at = text.find(quoted)
        if at >= 0:
            text = text[:at] + quoted + "0, " + text[at:]
    if rng.random() < 0.05:
        text = text[: rng.randrange(len(text) + 1)]  # cut short
    return text
