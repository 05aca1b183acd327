"""The example plugin package of docs/writing-a-plugin.md, installed with pip as a user would: listed by the CLI, its
conformance case run, and vqbench's own suite skipping (not failing on) an installed plugin without a case."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vqbench.plugins as plugins

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tests" / "example_package"
DOC = ROOT / "docs" / "writing-a-plugin.md"

# A second installed plugin, deliberately without a vqbench_conformance_cases hook.
CASELESS_TOML = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "vqbench-uniform"
version = "0.1.0"

[project.entry-points.vqbench]
uniform = "vqbench_uniform"

[tool.setuptools]
py-modules = ["vqbench_uniform"]
"""
CASELESS = '''\
import torch

import vqbench
from vqbench.interfaces import Prior


class UniformPrior(Prior):
    """Every code equally likely."""

    trainable = False

    def fit(self, codes):
        pass

    def loss(self, codes, labels=None):
        return torch.zeros(())

    def sample(self, n, latent_shape, generator, labels=None, **opts):
        return torch.randint(self.codebook_size, (n, *latent_shape), generator=generator, device=generator.device)


@vqbench.hookimpl
def vqbench_register_priors(registry):
    registry.register("uniform", UniformPrior)
'''


def run(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """Install the example package and the case-less plugin with pip into a folder; an environment that sees them."""
    tmp = tmp_path_factory.mktemp("plugins")
    shutil.copytree(PACKAGE, tmp / "unmask", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    (tmp / "uniform").mkdir()
    (tmp / "uniform" / "pyproject.toml").write_text(CASELESS_TOML)
    (tmp / "uniform" / "vqbench_uniform.py").write_text(CASELESS)
    env = {k: v for k, v in os.environ.items() if k not in (plugins.DISABLE_AUTOLOAD_ENV, plugins.EXTRA_PLUGINS_ENV)}
    pip = ["-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check"]
    done = run([*pip, "--target", str(tmp / "site"), str(tmp / "unmask"), str(tmp / "uniform")], env, cwd=tmp)
    assert done.returncode == 0, done.stderr
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp / "site"), os.environ.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    return env


@pytest.fixture(scope="module")
def listed(installed) -> list[str]:
    """The output of `vqbench list` and `vqbench list unmask`, with both packages installed (one process)."""
    done = run(["-c", "import sys; from vqbench.cli import main; main(['list']); print('#####'); sys.exit(main(['list', 'unmask']))"], installed)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("#####\n")


@pytest.fixture(scope="module")
def contract_run(installed, tmp_path_factory) -> str:
    """One pytest run with both packages installed: the doc's plugin test, and vqbench's conformance suite on the
    installed priors (and `independent`)."""
    (test,) = [block for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S) if block.startswith("# tests/test_unmask.py")]
    folder = tmp_path_factory.mktemp("plugin_tests")
    (folder / "test_unmask.py").write_text(test)
    pytest_args = ["-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider", "--rootdir", str(ROOT)]
    done = run([*pytest_args, str(folder / "test_unmask.py"), "tests/test_conformance.py", "-k", "unmask or uniform or independent"], installed)
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout


def test_the_doc_shows_the_example_package_files_verbatim():
    doc = DOC.read_text()
    for name, lang in (("vqbench_unmask.py", "python"), ("pyproject.toml", "toml")):
        assert f"```{lang}\n{(PACKAGE / name).read_text()}```" in doc, f"docs/writing-a-plugin.md differs from tests/example_package/{name}"


def test_vqbench_list_shows_the_installed_prior_and_its_package(listed):
    (line,) = [line for line in listed[0].splitlines() if line.startswith("  unmask ")]
    assert re.match(r"  unmask +unmask \(vqbench-unmask\) +Masked-token prediction on a bidirectional backbone", line)


def test_vqbench_list_name_shows_the_installed_priors_origin_and_keys(listed):
    assert "origin: plugin 'unmask', package vqbench-unmask 0.1.0" in listed[1]
    assert "backbone: mapping = {name: transformer, dim: 256, depth: 8, heads: 8, dim_head: 32}  # any registered backbone" in listed[1]
    assert "    steps: int = 8  # network evaluations per sample" in listed[1]


def test_the_docs_plugin_test_passes_on_the_installed_package(contract_run):
    assert re.search(r"TestUnmask::test_loss_is_a_finite_differentiable_scalar\[unmask\] PASSED", contract_run)
    assert re.search(r"TestUnmask::test_placed_tokens_are_never_changed\[unmask\] PASSED", contract_run)  # commits=True checked


def test_vqbench_suite_runs_installed_cases_and_skips_a_plugin_without_one(contract_run):
    assert "FAILED" not in contract_run and "ERROR" not in contract_run
    assert re.search(r"TestRegisteredPriors::test_labels_change_the_loss_and_the_samples\[unmask\] PASSED", contract_run)
    assert re.search(r"TestRegisteredPriors::test_samples_under_bf16_autocast\[independent\] PASSED", contract_run)
    assert re.search(r"TestRegisteredPriors::test_loss_is_a_finite_differentiable_scalar\[uniform-no-case\] SKIPPED", contract_run)
    assert "prior 'uniform': plugin 'uniform' registers no conformance case: implement vqbench_conformance_cases" in contract_run
