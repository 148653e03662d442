"""fake_slurmd/scenario.schema.json: it accepts the scenarios the project ships and its tests load, rejects
the bad ones the loader's tests list, and names exactly the loader's keys and releases. What only the loader
can tell (users that exist, repeats across items, addresses that clash) is listed, and checked to pass the
schema, so the list says the truth."""

from __future__ import annotations

import ast
import datetime
import json
import math
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from fake_slurmd import scenario as scenario_module
from fake_slurmd.scenario import JOB_KEYS, NAMESPACE_TYPES, NODE_KEYS, TOP_KEYS, X11_KEYS, Scenario
from slurmproto.versions import BY_NAME
from tests.test_fake_model import BAD_SCENARIOS, TOML
from tests.test_fake_scenario_types import CLUSTER_CASES, JSON_CASES, TOML_CASES

jsonschema = pytest.importorskip("jsonschema", reason="the schema test needs jsonschema (pip install '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
LOADER_ONLY = {
    "no such user": "whether a user exists is the machine's, not the file's",
    "appears twice (job)": "a job id repeated across [[jobs]] items",
    "appears twice (node)": "a node name repeated across [[nodes]] items",
    "no node": "a job naming a node the scenario lacks",
    "already": "two nodes on one address and port (IPv6 spellings, wildcards)",
    "host bits": "a subnet with host bits set",
    "too many nodes": "more nodes than the subnet holds",
    "integral float": "JSON counts 5.0 as the integer 5; the loader wants an integer written as one",
    "surrogate": "a lone surrogate is a string to JSON, not a UTF-8 path",
}


def loader_only(message: str) -> str | None:
    """The LOADER_ONLY key a bad case's expected message belongs to, if any."""
    checks = [("no such user", "no such user"), (r"job \d+ appears twice", "appears twice (job)"),
              ("node '[^']+' appears twice", "appears twice (node)"), ("no node '", "no node"),
              ("is [a-z]+'s already", "already"), ("got '10.1.0.1/24'", "host bits"),
              (r"nodes: \d+ nodes: at most", "too many nodes"), (r"got \d+\.0$", "integral float"),
              ("in UTF-8", "surrogate")]
    for pattern, key in checks:
        if re.search(pattern, message):
            return key
    return None


def schema() -> dict[str, Any]:
    text = resources.files("fake_slurmd").joinpath("scenario.schema.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def validator() -> Any:
    cls = jsonschema.Draft202012Validator
    cls.check_schema(schema())
    return cls(schema(), format_checker=cls.FORMAT_CHECKER)


def as_json(value: Any) -> Any:
    """TOML's values as a JSON document holds them: date-times as RFC 3339 strings."""
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} has no JSON form")
    return value


def no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def parse(text: str, json_file: bool) -> Any:
    """The JSON document, or None when there is none: bad syntax, nesting past what a parser takes, values
    JSON cannot hold (NaN, infinities; the loader refuses them, a schema is never asked)."""
    try:
        return json.loads(text, parse_constant=no_constant) if json_file else as_json(tomllib.loads(text))
    except (ValueError, RecursionError):
        return None


def shipped_scenarios() -> list[Path]:
    """Every scenario file in the repository: examples, docs, the systemd unit's sample."""
    found = [p for top in ("examples", "docs", "packaging") for p in sorted((ROOT / top).rglob("*.toml"))
             if (ROOT / top).is_dir() and p.name != "pyproject.toml"]
    return found


def docstring_example() -> str:
    """The scenario module's own example, every key at once but `network` (which would assign the addresses
    the example's node gives)."""
    doc = scenario_module.__doc__ or ""
    lines = doc.split("\n\n", 1)[1].split("\n\nWithout")[0].splitlines()
    keep = [line[4:] for line in lines if not line[4:].startswith(("network", "subnet", " "))]
    return "\n".join(keep)


def test_schema_names_the_loaders_keys_and_releases() -> None:
    data = schema()
    assert set(data["properties"]) == TOP_KEYS
    defs = data["$defs"]
    assert set(defs["node"]["properties"]) == NODE_KEYS
    job = defs["job"]["properties"]
    assert set(job) == JOB_KEYS
    assert set(job["x11"]["properties"]) == X11_KEYS
    assert set(job["namespaces"]["properties"]) == set(NAMESPACE_TYPES)
    assert data["properties"]["release"]["enum"] == [*BY_NAME, None]


def test_shipped_scenarios_pass_schema_and_loader() -> None:
    check = validator()
    paths = shipped_scenarios()
    assert paths, "the repository ships scenario files (examples/, packaging/)"
    for path in paths:
        document = parse(path.read_text(), json_file=False)
        assert list(check.iter_errors(document)) == [], path
        Scenario.load(path)  # the loader agrees


def literal_text(node: ast.expr, names: dict[str, Any]) -> str | None:
    """The string an expression of string literals, module constants and `+` stands for, else None."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.Name):
        value = names.get(node.id)
        return value if isinstance(value, str) else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = literal_text(node.left, names), literal_text(node.right, names)
        return left + right if left is not None and right is not None else None
    return None


def written_scenarios() -> dict[str, str]:
    """Every scenario text the tests write to a file from literals (`path.write_text(NODE + "...")`)."""
    found = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        names = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "write_text":
                text = literal_text(node.args[0], names) if node.args else None
                if text is not None and ("[[nodes]]" in text or "[[jobs]]" in text or text.startswith("{")):
                    found[f"{path.name}:{node.lineno}"] = text
    return found


def test_the_tests_scenarios_pass() -> None:
    """Those the loader accepts, the schema accepts (the bad ones are the next test's)."""
    check = validator()
    documents = {"module docstring": docstring_example(), "test_fake_model.TOML": TOML, **written_scenarios()}
    accepted = 0
    for name, text in documents.items():
        try:
            Scenario.from_dict(json.loads(text) if text.startswith("{") else tomllib.loads(text), name)
        except (ValueError, TypeError):
            if name not in ("module docstring", "test_fake_model.TOML"):
                continue  # a bad scenario of some test
        document = parse(text, json_file=text.startswith("{"))
        assert document is not None and list(check.iter_errors(document)) == [], name
        accepted += 1
    assert accepted >= 8, documents


BAD = [(c[1], c[2], False) for c in TOML_CASES + CLUSTER_CASES] + [(c[1], c[2], True) for c in JSON_CASES] + [
    (text, message, False) for text, message in BAD_SCENARIOS]


@pytest.mark.parametrize(("text", "message", "json_file"), BAD, ids=[m[:60] for _, m, _ in BAD])
def test_bad_scenarios_are_rejected(text: str, message: str, json_file: bool) -> None:
    document = parse(text, json_file)
    if document is None:  # not TOML or JSON at all: nothing for a schema to look at
        return
    errors = list(validator().iter_errors(document))
    kind = loader_only(message)
    if kind is None:
        assert errors, f"the schema accepts what the loader refuses: {message}"
    else:
        assert kind in LOADER_ONLY
        assert not errors, f"the schema now rejects a {kind!r} case: drop it from LOADER_ONLY ({errors[0].message})"
