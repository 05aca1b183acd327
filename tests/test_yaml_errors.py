"""A benchmark YAML with a syntax error stops with one line, ``<file>:<line>:<column>: <problem>``, and exit code 2
(PyYAML's own message spans five lines and quotes the source); a ``--set`` value that is not YAML likewise."""

from __future__ import annotations

from pathlib import Path

import pytest

from vqbench.cli import main

CASES = {
    "bad indentation": (
        "name: smoke\npriors:\n  - name: independent\n   seeds: [0]\n",
        "4:4: expected <block end>, but found '<block mapping start>' (while parsing a block collection that starts at 3:3)",
    ),
    "unclosed bracket": (
        "name: smoke\nseeds: [0, 1\npriors:\n  - name: independent\n",
        "3:7: expected ',' or ']', but got ':' (while parsing a flow sequence that starts at 2:8)",
    ),
    "tab": ("name: smoke\n\tseeds: [0]\n", "2:1: found character '\\t' that cannot start any token"),
    "second document": (
        "name: one\npriors: [{name: independent}]\n---\nname: two\npriors: [{name: independent}\n",
        "6:1: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence that starts at 5:9)",  # file lines
    ),
    "unquoted colon": ("name: smoke\nout: results: old\n", "2:13: mapping values are not allowed here"),
    "control character": ("name: smo\x01ke\n", "1:10: unacceptable character #x0001"),
}


@pytest.mark.parametrize("text, expected", CASES.values(), ids=CASES.keys())
def test_a_yaml_syntax_error_is_one_line_naming_file_line_and_column(tmp_path, capsys, text, expected):
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"vqbench: error: {path}:{expected}")


def test_the_tab_error_says_to_indent_with_spaces(tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_text(CASES["tab"][0])
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.rstrip().endswith("indent with spaces, not tabs")


def test_a_set_value_that_is_not_yaml_is_one_line(tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_text("name: smoke\npriors: [{name: independent}]\n")
    assert main(["validate", str(path), "--set", "seeds=[0, 1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("vqbench: error: --set: 'seeds=[0, 1': the value is not valid YAML at column 6: expected ',' or ']'")


def test_a_valid_file_still_loads(tmp_path):
    from vqbench.runner.schema import load_yaml

    path = Path(tmp_path / "bench.yaml")
    path.write_text("name: one\n---\nname: two\n")
    assert [doc["name"] for doc in load_yaml(path)] == ["one", "two"]
