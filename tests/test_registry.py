"""Registries accept only concrete classes implementing their kind's interface."""

from __future__ import annotations

import pytest
import torch

import vqbench
import vqbench.plugins as plugins
from vqbench.cli import main
from vqbench.interfaces import CausalBackbone, Prior, Tokenizer, TrainableTokenizer
from vqbench.registry import Registry


class HalfPrior(Prior):
    """Declares no loss and no sampler: abstract."""


class NotAPrior:
    pass


class LoadOnlyTokenizer(Tokenizer):
    """A tokenizer that can only be loaded from a checkpoint (no presets, no training)."""

    codebook_size, downsample_factor = 8, 4

    def encode(self, images):
        return torch.zeros(images.shape[0], images.shape[2] // 4, images.shape[3] // 4, dtype=torch.long)

    def decode(self, codes):
        return torch.zeros(codes.shape[0], 3, codes.shape[1] * 4, codes.shape[2] * 4)

    def config_dict(self):
        return {}

    @classmethod
    def load(cls, path, **options):
        return cls()


class LoadOnlyPlugin:
    @vqbench.hookimpl
    def vqbench_register_tokenizers(self, registry):
        registry.register("load_only", LoadOnlyTokenizer)


def test_registry_refuses_classes_that_do_not_implement_the_interface():
    registry: Registry = Registry("prior", Prior)
    with pytest.raises(TypeError, match=r"prior 'odd' \(registered by my_plugin\) must be a subclass of vqbench.interfaces.Prior"):
        registry.register("odd", NotAPrior, "my_plugin")
    with pytest.raises(TypeError, match="prior 'half' does not implement loss, sample of Prior"):
        registry.register("half", HalfPrior)
    assert "odd" not in registry and "half" not in registry


def test_every_builtin_plugin_implements_its_interface():
    regs = vqbench.registries()
    for registry in regs.kinds().values():
        for name, entry in registry.items():
            registry.check(name, entry)  # raises if not
    assert issubclass(regs.tokenizers.get("vqgan"), TrainableTokenizer)
    assert issubclass(regs.backbones.get("transformer"), CausalBackbone)
    assert not issubclass(regs.backbones.get("hourglass"), CausalBackbone)


def test_a_tokenizer_without_training_cannot_be_trained_from_a_preset(smoke_config, tmp_path, capsys):
    import yaml

    plugins.register_plugin(LoadOnlyPlugin())
    smoke_config["tokenizer"] = {"name": "load_only", "preset": "tiny"}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tokenizer.preset: tokenizer 'load_only' cannot be trained from a preset" in err and "give tokenizer.checkpoint" in err


def test_the_readme_trainable_tokenizer_example_runs_a_benchmark(smoke_config, tmp_path):
    """The worked example in the README (kept identical to tests/example_tokenizer.py) trains, encodes and decodes."""
    import json
    from pathlib import Path

    import yaml

    from . import example_tokenizer

    source = Path(example_tokenizer.__file__).read_text()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"```python\n{source}```" in readme, "README's trainable tokenizer example differs from tests/example_tokenizer.py"
    plugins.register_plugin(example_tokenizer)
    smoke_config["tokenizer"] = {"name": "palette", "preset": "small", "params": {"codes": 8}}
    smoke_config["metrics"]["enabled"] = ["fid", "nll"]
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    assert main(["run", str(path)]) == 0
    protocol = json.loads((Path(smoke_config["out"]) / "protocol.json").read_text())
    assert protocol["latents"]["shape"] == [4, 4] and protocol["latents"]["codebook_size"] == 8
