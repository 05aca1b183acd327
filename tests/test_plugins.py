"""Plugin discovery, registries, did-you-mean, and a third-party plugin end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import vqbench
import vqbench.plugins as plugins
from vqbench.cli import main
from vqbench.errors import UnknownNameError
from vqbench.registry import Registry

from . import example_plugin


def test_builtins_come_through_the_entry_point_group():
    regs = vqbench.registries()
    assert "vqgan" in regs.tokenizers and "independent" in regs.priors
    assert {"toyfaces", "image_folder"} <= set(regs.datasets.names())
    assert {"fid", "kid", "prdc", "nll", "inpainting", "sample_time", "latent_stats"} <= set(regs.metrics.names())
    assert regs.priors.origin("independent") == "independent"  # the entry-point name


def test_registry_rejects_duplicates_and_suggests_names():
    registry = Registry("prior")
    registry.register("sundae", object)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("sundae", object)
    with pytest.raises(UnknownNameError, match="unknown prior 'sundea' — did you mean 'sundae'\\?"):
        registry.get("sundea")


def test_mistyped_hook_fails_loudly():
    class Typo:
        @vqbench.hookimpl
        def vqbench_register_prior(self, registry):  # missing 's'
            pass

    plugins.register_plugin(Typo())
    with pytest.raises(Exception, match="vqbench_register_prior"):
        vqbench.registries()


def test_in_process_plugin_appears_in_list(capsys):
    plugins.register_plugin(example_plugin)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "table" in out and "nan_prior" in out and "independent" in out


def _fake_distribution(root: Path) -> None:
    """An installed third-party package: a module plus dist-info with a ``vqbench`` entry point."""
    (root / "thirdparty_prior.py").write_text(
        textwrap.dedent('''
        import vqbench
        from tests.example_plugin import TablePrior

        class ThirdParty(TablePrior):
            """Installed from a temporary directory."""

        @vqbench.hookimpl
        def vqbench_register_priors(registry):
            registry.register("thirdparty", ThirdParty)
    ''')
    )
    info = root / "thirdparty_prior-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-prior\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[vqbench]\nthirdparty = thirdparty_prior\n")


def _list_in_subprocess(root: Path, **env: str) -> str:
    repo = Path(__file__).resolve().parents[1]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(repo)]), **env}
    result = subprocess.run([sys.executable, "-m", "vqbench.cli", "list"], capture_output=True, text=True, env=environment, check=True)
    return result.stdout


def test_installed_third_party_plugin_is_found_and_can_be_disabled(tmp_path):
    _fake_distribution(tmp_path)
    assert "thirdparty" in _list_in_subprocess(tmp_path)
    disabled = _list_in_subprocess(tmp_path, VQBENCH_DISABLE_PLUGIN_AUTOLOAD="1")
    assert "thirdparty" not in disabled and "independent" in disabled  # built-ins still load


def test_third_party_prior_runs_in_a_benchmark(smoke_config, tmp_path):
    import yaml

    plugins.register_plugin(example_plugin)
    smoke_config["priors"] = [{"name": "table", "params": {"init_scale": 0.01}}]
    smoke_config["metrics"]["enabled"] = ["nll", "latent_stats", "sample_time"]
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    assert main(["run", str(path)]) == 0
    report = (Path(smoke_config["out"]) / "report.md").read_text()
    assert "| table" in report
