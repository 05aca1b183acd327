"""`vqbench list` (every plugin with its whole first docstring paragraph) and `vqbench list NAME` (one plugin in full)."""

from __future__ import annotations

import re
import types
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import torch

import vqbench
import vqbench.plugins as plugins
from vqbench.cli import main
from vqbench.interfaces import Prior
from vqbench.listing import config_keys


@dataclass
class Inner:
    depth: int = 2  # layers per block
    widths: list[int] = field(default_factory=lambda: [8, 16])


@dataclass
class DemoSampler:
    steps: int = 4  # refinement steps
    schedule: Literal["cosine", "linear"] = "cosine"


@dataclass
class DemoConfig(DemoSampler):
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "hourglass", "dim": 64})
    inner: Inner = field(default_factory=lambda: Inner(depth=3))
    limit: float | None = None


class DemoPrior(Prior):
    """A demonstration prior whose summary runs over several source lines, so that the listing has to join them and
    wrap them at the terminal width; the first line alone would stop at the word and.

    Second paragraph: only the full view shows it."""

    Config = DemoConfig
    sampler_config = DemoSampler
    supports_likelihood = True

    def loss(self, codes, labels=None):
        return torch.zeros(())

    def sample(self, n, latent_shape, generator, labels=None, **opts):
        return torch.zeros(n, *latent_shape, dtype=torch.long)


@vqbench.hookimpl
def register(registry):
    registry.register("demo", DemoPrior)


def demo_plugin() -> types.ModuleType:
    module = types.ModuleType("demo_plugin")
    module.vqbench_register_priors = register  # type: ignore[attr-defined]
    return module


def list_output(capsys, *args: str) -> str:
    assert main(["list", *args]) == 0
    return capsys.readouterr().out


def described(lines: list[str], name: str) -> tuple[str, str]:
    """(origin, description) of ``name``'s entry in `vqbench list`, its wrapped description lines joined."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {name} "))
    head = re.match(rf"  {name} +(\S+) +", lines[start])
    assert head
    column = head.end()
    text = [lines[start][column:]]
    for line in lines[start + 1 :]:
        if not line.startswith(" " * column):
            break
        text.append(line[column:])
    assert all(not t.startswith(" ") for t in text)  # continuation lines align with the first
    return head.group(1), " ".join(text)


def test_list_shows_the_whole_first_paragraph_wrapped_to_the_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    plugins.register_plugin(demo_plugin())
    lines = list_output(capsys).splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert described(lines, "demo") == (
        "demo_plugin",
        "A demonstration prior whose summary runs over several source lines, so that the listing has to join them and "
        "wrap them at the terminal width; the first line alone would stop at the word and.",
    )
    assert "Second paragraph" not in "\n".join(lines)


def test_list_joins_a_builtin_docstring_beyond_its_first_line(capsys):
    origin, text = described(list_output(capsys).splitlines(), "imagebart")
    assert origin == "imagebart"
    assert text.endswith("steps: ELBO likelihood, KV-cache sampling, inpainting with known tokens forced at every scale and forward–backward chains.")


def test_list_name_shows_kind_origin_docstring_keys_and_sampler_settings(capsys):
    plugins.register_plugin(demo_plugin())
    out = list_output(capsys, "demo")
    keys, sampler = out.split("  sampler settings (in params, or priors[].sampling: they do not change training):\n")
    assert keys.startswith("prior 'demo'\n  origin: plugin 'demo_plugin', registered in-process\n  class: tests.test_listing.DemoPrior\n")
    assert "  supports: likelihood; trained by gradient descent\n" in keys
    assert "  A demonstration prior whose summary" in keys and "  Second paragraph: only the full view shows it." in keys
    assert keys.endswith(
        "  keys (priors[].params):\n"
        "    backbone: mapping = {name: hourglass, dim: 64}\n"
        "        (a backbone spec: `vqbench list hourglass` shows its keys)\n"
        "    inner: mapping\n"
        "      depth: int = 3  # layers per block\n"
        "      widths: list of int = [8, 16]\n"
        "    limit: float | null = null\n"
    )
    assert sampler == "    steps: int = 4  # refinement steps\n    schedule: cosine | linear = cosine\n"


def test_list_name_shows_a_builtin_priors_default_backbone_spec(capsys):
    out = list_output(capsys, "absorbing")
    assert out.startswith("prior 'absorbing'\n  origin: plugin 'absorbing', package vqbench ")
    assert "    backbone: mapping = {name: transformer, dim: 256, depth: 8, heads: 8, dim_head: 32}\n" in out
    assert "        (a backbone spec: `vqbench list transformer` shows its keys)\n" in out
    assert out.index("    sampler: absorbing | maskgit = absorbing\n") > out.index("  sampler settings")


def test_list_name_shows_nested_tokenizer_keys_presets_and_training_keys(capsys):
    out = list_output(capsys, "vqgan")
    assert "  presets: tiny, ffhq-f16, megapixel-f32\n" in out
    assert "    ddconfig: mapping\n      double_z: bool = false\n" in out
    assert "  training keys (tokenizer.train; each preset has its own defaults):\n    steps: int = 2000\n" in out


def test_a_plugin_without_config_has_no_keys(capsys):
    assert "\n  keys: none\n" in list_output(capsys, "classifier")


def test_a_required_key_is_marked():
    @dataclass
    class Needs:
        path: str
        size: int = 3

    assert config_keys(Needs, vqbench.registries()) == ["    path: str (required)", "    size: int = 3"]


@pytest.mark.parametrize("name, hint", [("sundea", " — did you mean 'sundae'?"), ("zzzz", "")])
def test_an_unknown_name_exits_2_with_a_suggestion(capsys, name, hint):
    assert main(["list", name]) == 2
    err = capsys.readouterr().err
    assert err == f"vqbench: error: list: no plugin is registered as '{name}'{hint} (`vqbench list` shows every name)\n"
