"""Priors trained by the reference code bases load exactly: tiny random models saved by Unleashing Transformers and
taming-transformers themselves (tests/fixtures/make_reference_priors.py), with the logits and NLL their code computed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import vqbench
from vqbench import checkpoints, latents
from vqbench.cli import main
from vqbench.config import parse

FIXTURES = Path(__file__).parent / "fixtures" / "reference_priors"
EXPECTED = torch.load(FIXTURES / "expected.pt", weights_only=True)
CODES, LABELS = EXPECTED["codes"], EXPECTED["labels"]
K, SHAPE = 16, (4, 4)
FILES = {
    "unleashing-absorbing": ("unleashing_absorbing.th", "unleashing", "unleashing.yaml"),
    "unleashing-ar": ("unleashing_ar.th", "unleashing", "unleashing.yaml"),
    "taming-uncond": ("taming_uncond.ckpt", "taming", "taming_uncond.yaml"),
    "taming-classes": ("taming_classes.ckpt", "taming", "taming_classes.yaml"),
}


def build(which: str, num_classes: int | None = None):
    """The vqbench prior a fixture file loads into, with its weights."""
    name, fmt, config = FILES[which]
    loaded = checkpoints.load(str(FIXTURES / name), fmt, "priors[0].checkpoint", str(FIXTURES / config))
    cls = vqbench.registries().priors.get(loaded.prior)
    classes = loaded.num_classes if num_classes is None else num_classes
    prior = cls(parse(cls.Config, loaded.config, "params"), loaded.codebook_size, loaded.latent_shape, classes)
    checkpoints.load_weights(prior, loaded, "priors[0].checkpoint")
    return prior.eval(), loaded


def test_unleashing_absorbing_denoiser_gives_their_logits():
    prior, loaded = build("unleashing-absorbing")
    assert (loaded.prior, loaded.latent_shape, loaded.codebook_size) == ("absorbing", SHAPE, K)
    assert prior.config.total_steps == 32 and prior.net.config.heads == 4  # from their hyperparameter file
    with torch.no_grad():
        logits = prior.net(EXPECTED["unleashing_absorbing_input"])  # their mask id K is vqbench's mask token
    torch.testing.assert_close(logits, EXPECTED["unleashing_absorbing_logits"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("which, key", [("unleashing-ar", "unleashing_ar"), ("taming-uncond", "taming_uncond"), ("taming-classes", "taming_classes")])
def test_autoregressive_models_give_their_logits_and_exact_nll(which, key):
    prior, loaded = build(which)
    labels = LABELS if loaded.num_classes else None
    with torch.no_grad():
        logits = prior.net(prior._inputs(CODES, labels), labels)
        nll = prior.nll(CODES.view(-1, *SHAPE), labels=labels)
    torch.testing.assert_close(logits, EXPECTED[f"{key}_logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(nll, EXPECTED[f"{key}_nll_bpt"], rtol=0, atol=1e-5)
    if which == "unleashing-ar":  # their training loss is the batch's exact NLL in bits per token
        assert nll.mean().item() == pytest.approx(EXPECTED["unleashing_ar_loss_bpt"].item(), abs=1e-5)


def test_taming_class_token_is_the_label():
    prior, _ = build("taming-classes")
    with torch.no_grad():
        a, b = prior.nll(CODES.view(-1, *SHAPE), labels=LABELS), prior.nll(CODES.view(-1, *SHAPE), labels=(LABELS + 1) % 5)
    assert not torch.allclose(a, b)
    out = prior.sample(3, SHAPE, torch.Generator().manual_seed(0), labels=LABELS[:3])
    assert out.shape == (3, *SHAPE) and out.dtype == torch.long and int(out.max()) < K


def _bench(tmp_path: Path, checkpoint: dict, h: int = 4) -> Path:
    train = latents.write(tmp_path / "train", torch.randint(0, K, (8, h, 16 // h)), K)
    test = latents.write(tmp_path / "test", CODES.view(-1, h, 16 // h), K)
    bench = {
        "name": "reference", "latents": {"train": str(train), "test": str(test)},
        "priors": [{"name": "autoregressive", "label": "loaded", "checkpoint": checkpoint}],
        "sampling": {"num_samples": 4, "batch_size": 4, "grid_size": 2}, "metrics": {"enabled": ["nll"]},
        "device": "cpu", "precision": "fp32", "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache"),
    }  # fmt: skip
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    return path


@pytest.mark.parametrize("which, key", [("unleashing-ar", "unleashing_ar"), ("taming-uncond", "taming_uncond")])
def test_a_benchmark_row_reports_the_reference_nll(tmp_path, which, key):
    name, fmt, config = FILES[which]
    path = _bench(tmp_path, {"path": str(FIXTURES / name), "format": fmt, "config": str(FIXTURES / config)})
    assert main(["run", str(path)]) == 0
    record = json.loads((tmp_path / "out" / "runs" / "loaded__seed0" / "metrics.json").read_text())
    assert record["values"]["nll_bpt"] == pytest.approx(EXPECTED[f"{key}_nll_bpt"].mean().item(), abs=1e-5)
    assert record["info"]["loaded"]["config"] == config
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"loaded from {name} ({fmt}" in report and f"with {config}" in report


def _fails(capsys, path: Path, *needles: str) -> None:
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(n in err for n in needles), err
    assert not (path.parent / "out" / "runs").exists()


def test_a_taming_checkpoint_without_its_yaml_is_refused(tmp_path, capsys):
    _fails(
        capsys, _bench(tmp_path, {"path": str(FIXTURES / "taming_uncond.ckpt"), "format": "taming"}), "priors[0].checkpoint.config", "config: FILE"
    )


def test_a_grid_of_another_shape_is_refused_naming_both(tmp_path, capsys):
    name, fmt, config = FILES["unleashing-ar"]
    path = _bench(tmp_path, {"path": str(FIXTURES / name), "format": fmt, "config": str(FIXTURES / config)}, h=2)
    _fails(capsys, path, "4×4", "2×8", "16 codes")


def test_a_file_of_another_format_is_refused(tmp_path, capsys):
    path = _bench(tmp_path, {"path": str(FIXTURES / "taming_uncond.ckpt"), "format": "unleashing"})
    _fails(capsys, path, "taming_uncond.ckpt", "_denoise_fn", "check `format`")


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda c: c["model"]["params"].update(permuter_config={"target": "taming.modules.transformer.permuter.AlternateParsing"}), "permuter"),
        (lambda c: c["model"]["params"]["transformer_config"]["params"].update(n_head=5), "not divisible by 5 heads"),
        (lambda c: c["model"]["params"]["first_stage_config"]["params"].update(n_embed=32), "only GPTs whose vocabulary is the codebook"),
    ],
)
def test_a_taming_yaml_that_does_not_fit_is_refused(tmp_path, capsys, edit, needle):
    config = yaml.safe_load((FIXTURES / "taming_uncond.yaml").read_text())
    edit(config)
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(config))
    path = _bench(tmp_path, {"path": str(FIXTURES / "taming_uncond.ckpt"), "format": "taming", "config": str(tmp_path / "edited.yaml")})
    _fails(capsys, path, needle, "edited.yaml" if "vocabulary" not in needle else "taming_uncond.ckpt")


def test_bernoulli_unmasking_reveals_each_masked_token_with_probability_one_over_t():
    """Unleashing's sampler: at step t each still-masked token is revealed w.p. 1/t, so counts vary per grid."""
    prior, _ = build("unleashing-absorbing")
    seen: list[torch.Tensor] = []
    predict = prior._predict
    prior._predict = lambda x, labels, cfg, *rows: (seen.append(x.clone()), predict(x, labels, cfg, *rows))[1]
    out = prior.sample(400, SHAPE, torch.Generator().manual_seed(0), unmask="bernoulli", steps=4)
    masked = [(x == K).sum(dim=1).float() for x in seen] + [(out.flatten(1) == K).sum(dim=1).float()]
    assert len(seen) == 4 and masked[-1].sum() == 0  # t = 4, 3, 2, 1; everything revealed at t = 1
    for t, (before, after) in zip((4, 3, 2), zip(masked, masked[1:])):
        revealed = before - after
        assert revealed.sum() / before.sum() == pytest.approx(1 / t, abs=4 * math.sqrt((1 / t) * (1 - 1 / t) / before.sum().item()))
        assert revealed.var() > 1.0  # a random count per grid, not the schedule's fixed one


def test_the_worked_example_benchmark_runs_every_loaded_row(tmp_path, monkeypatch):
    """benchmarks/published_models.yaml (README "Comparing with published models"), shrunk: the taming file's VQ-GAN
    as tokenizer, three loaded rows and one trained here, side by side."""
    monkeypatch.chdir(Path(__file__).parents[1])
    sets = ["metrics.enabled=[nll]", "sampling.num_samples=8", "sampling.batch_size=8", "budget.steps=3", "dataset.params.count=60"]
    sets += [f"out={tmp_path / 'out'}", f"cache={tmp_path / 'cache'}"]
    assert main(["run", "benchmarks/published_models.yaml", *[a for s in sets for a in ("--set", s)]]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.count("not trained here: the training budget does not apply") == 2 * 3  # header + Settings table
    assert "autoregressive (trained here)" in report
