"""Tokenizer checkpoints from Unleashing Transformers (``format: unleashing``) and taming Net2Net YAMLs.

The fixture tests/fixtures/unleashing_vqgan/ was computed by their own code (tests/fixtures/make_unleashing_vqgan.py):
their state dict file, their hparams, and the codes and images their encoder, quantizer and generator give."""

from __future__ import annotations

import lzma
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import vqbench
from vqbench import latents
from vqbench.cli import main
from vqbench.errors import ConfigError, DataError
from vqbench.runner.schema import parse_benchmark

FIXTURE = Path(__file__).parent / "fixtures" / "unleashing_vqgan"
ARCH = {"img_size": 16, "nf": 32, "ch_mult": [2, 1], "res_blocks": 1, "attn_resolutions": [8], "emb_dim": 8, "codebook_size": 32, "n_channels": 3}


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURE / "expected.pt", weights_only=True)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """Their ``vqgan_1.th``, byte for byte as ``torch.save`` wrote it."""
    path = tmp_path / "vqgan_1.th"
    path.write_bytes(lzma.decompress((FIXTURE / "vqgan_1.th.xz").read_bytes()))
    return path


def load(checkpoint: Path, config: Path | str | None = FIXTURE / "hparams.yaml", **options):
    return vqbench.load_tokenizer("vqgan", checkpoint=str(checkpoint), **({"config": str(config)} if config else {}), **options)


def write_hparams(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "hparams.yaml"
    path.write_text(yaml.safe_dump({**ARCH, **changes}))
    return path


# ---- exactness against their code ------------------------------------------------------------------------------------


def test_encoder_codes_and_decoded_images_match_their_code(checkpoint, expected):
    tok = load(checkpoint, format="unleashing")
    images = expected["images"] * 2 - 1  # their [0, 1] → vqbench's [-1, 1] (exact: the images are k/256)
    torch.testing.assert_close(tok.encoder((images + 1) / 2), expected["encoder_out"], atol=1e-5, rtol=0)
    codes = tok.encode(images)
    assert torch.equal(codes, expected["codes"])
    raw = tok.decode_latents(tok.quantize.lookup(expected["codes"]))  # unclamped: most of it lies outside [-1, 1]
    torch.testing.assert_close((raw + 1) / 2, expected["decoded"], atol=1e-5, rtol=0)
    torch.testing.assert_close(tok.decode(expected["codes"]), expected["decoded"].clamp(0, 1) * 2 - 1, atol=2e-5, rtol=0)
    assert (tok.codebook_size, tok.downsample_factor, tok.latent_shape(16), tok.trained_resolution) == (32, 2, (8, 8), 16)


def test_format_is_detected_and_sizes_are_read_from_the_weights(checkpoint, expected, tmp_path):
    """No ``format``; the config gives only what shapes cannot tell (codebook_size, emb_dim, nf, n_channels omitted)."""
    config = tmp_path / "h.json"
    config.write_text('{"img_size": 16, "ch_mult": [2, 1], "res_blocks": 1, "attn_resolutions": [8]}')
    tok = load(checkpoint, config)
    assert torch.equal(tok.encode(expected["images"] * 2 - 1), expected["codes"])
    assert tok.config_dict() == {"format": "unleashing", **ARCH, "quantizer": "nearest"}


def test_vqbench_save_of_a_loaded_model_round_trips(checkpoint, expected, tmp_path):
    tok = load(checkpoint)
    tok.save(tmp_path / "tok.pt")
    again = load(tmp_path / "tok.pt", config=None)
    assert again.config == tok.config and again.trained_resolution == 16
    assert torch.equal(again.encode(expected["images"] * 2 - 1), expected["codes"])


def test_encode_command_and_benchmark_section_pass_the_format(checkpoint, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    args = ["encode", "--checkpoint", str(checkpoint), "--config", str(FIXTURE / "hparams.yaml"), "--images", str(tmp_path / "imgs")]
    assert main([*args, "--format", "unleashing", "--out", str(tmp_path / "lat"), "--device", "cpu"]) == 0
    ds = latents.open(tmp_path / "lat")
    assert len(ds) == 3 and ds.latent_shape == (8, 8) and ds.codebook_size == 32
    assert ds.meta["tokenizer"]["config"]["format"] == "unleashing" and ds.meta["resolution"] == 16
    assert main([*args, "--format", "vqbench", "--out", str(tmp_path / "lat2"), "--device", "cpu"]) == 2  # the format is obeyed
    assert "vqgan_1.th: not a vqbench tokenizer file" in capsys.readouterr().err
    bench = {"name": "b", "priors": [{"name": "independent"}], "dataset": {"name": "image_folder"}, "metrics": {"enabled": []}}
    section = parse_benchmark({**bench, "tokenizer": {"checkpoint": str(checkpoint), "config": "h.yaml", "format": "unleashing"}}, []).tokenizer
    assert section is not None and section.load_options() == {"config": "h.yaml", "format": "unleashing"}
    with pytest.raises(ConfigError, match="tokenizer.format: must be one of .* did you mean 'unleashing'"):
        parse_benchmark({**bench, "tokenizer": {"checkpoint": "x.th", "format": "unleashed"}}, [])


# ---- bad inputs: one line naming the file ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"codebook_size": 64}, "codebook_size=64 in .*hparams.yaml, but the file's quantize.embedding.weight has shape \\[32, 8\\]"),
        ({"nf": 64}, "nf=64 in .*hparams.yaml, but the file's encoder.blocks.0.weight has shape \\[32, 3, 3, 3\\]"),
        ({"ch_mult": [2, 2]}, "shape file vs config: encoder.blocks.3.conv1.weight \\[32, 64, 3, 3\\] vs \\[64, 64, 3, 3\\]"),
        ({"res_blocks": 2}, "missing: encoder.blocks.2.norm1.weight.*encoder blocks: file 10, config 13"),
        ({"attn_resolutions": [16]}, "check nf, ch_mult, res_blocks, attn_resolutions and img_size"),
        ({"latent_shape": [1, 16, 16]}, "latent_shape=\\[1, 16, 16\\] in .*hparams.yaml, but img_size=16 and ch_mult=\\[2, 1\\] give 8×8"),
    ],
)
def test_config_that_does_not_fit_the_weights_is_one_line_naming_the_file(checkpoint, tmp_path, changes, message):
    with pytest.raises(DataError, match=message) as err:
        load(checkpoint, write_hparams(tmp_path, **changes))
    assert str(err.value).startswith(str(checkpoint)) and "\n" not in str(err.value)


def test_missing_files_defaults_and_gumbel_are_reported(checkpoint, tmp_path, capsys):
    with pytest.raises(DataError, match="nope.th: checkpoint not found"):
        load(tmp_path / "nope.th")
    with pytest.raises(DataError, match="nope.yaml: unleashing hparams file not found"):
        load(checkpoint, tmp_path / "nope.yaml")
    with pytest.raises(DataError, match="built from the default \\(FFHQ\\) hparams"):  # ch_mult [1, 1, 2, 2, 4] ≠ the file's
        load(checkpoint, config=None)
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "ae.quantize.proj.weight": torch.zeros(32, 8, 1, 1)}, tmp_path / "gumbel.th")
    with pytest.raises(DataError, match="gumbel.th: a Gumbel-quantizer VQ-GAN"):
        load(tmp_path / "gumbel.th")
    torch.save({**state, "ae.encoder.blocks.0.weight": torch.zeros(16, 3, 3, 3)}, tmp_path / "narrow.th")
    with pytest.raises(DataError, match="narrow.th: nf=16, ch_mult=\\[2, 1\\] from .*: every width nf×ch_mult must be a multiple of 32"):
        load(tmp_path / "narrow.th", write_hparams(tmp_path, nf=16))
    with pytest.raises(ConfigError, match="hparams.yaml:hparams.ch_mult\\[1\\]: expected an integer, got 1.5"):
        load(checkpoint, write_hparams(tmp_path, ch_mult=[2, 1.5]))
    with pytest.raises(ConfigError, match="format: unknown tokenizer checkpoint format 'unleash' — did you mean 'unleashing'"):
        load(checkpoint, format="unleash")
    bad = write_hparams(tmp_path, codebook_size=16)
    args = ["encode", "--checkpoint", str(checkpoint), "--config", str(bad), "--images", str(tmp_path), "--out", str(tmp_path / "lat")]
    assert main([*args, "--format", "unleashing"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(checkpoint) in err and "codebook_size=16" in err


# ---- taming Net2NetTransformer: the first stage of one Lightning file -------------------------------------------------

TINY = {
    "embed_dim": 32,
    "n_embed": 16,
    "ddconfig": {"double_z": False, "z_channels": 32, "resolution": 16, "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2]}
    | {"num_res_blocks": 1, "attn_resolutions": [8], "dropout": 0.0},
}


def net2net_yaml(first_stage: dict) -> dict:
    return {
        "model": {
            "target": "taming.models.cond_transformer.Net2NetTransformer",
            "params": {
                "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT", "params": {"vocab_size": 16, "block_size": 64}},
                "first_stage_config": {"target": "taming.models.vqgan.VQModel", "params": first_stage},
                "cond_stage_config": "__is_first_stage__",
            },
        }
    }


def test_net2net_checkpoint_loads_its_first_stage_with_the_net2net_yaml(tmp_path):
    from vqbench.config import parse

    cls = vqbench.registries().tokenizers.get("vqgan")
    torch.manual_seed(4)
    model = cls(parse(cls.Config, TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    weights = {f"{stage}.{k}": v for k, v in model.state_dict().items() for stage in ("first_stage_model", "cond_stage_model")}
    weights |= {"transformer.tok_emb.weight": torch.zeros(16, 8), "transformer.head.weight": torch.zeros(16, 8)}
    torch.save({"state_dict": weights, "global_step": 3}, tmp_path / "net2net.ckpt")
    (tmp_path / "net2net.yaml").write_text(yaml.safe_dump(net2net_yaml({**TINY, "lossconfig": {"target": "taming.modules.losses.DummyLoss"}})))
    loaded = load(tmp_path / "net2net.ckpt", tmp_path / "net2net.yaml")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded.encode(x), model.encode(x)) and loaded.trained_resolution == 16
    torch.testing.assert_close(loaded.decode(model.encode(x)), model.decode(model.encode(x)))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(net2net_yaml({"ckpt_path": "x"})))
    with pytest.raises(DataError, match="bad.yaml: expected model.params.first_stage_config.params.{embed_dim, n_embed, ddconfig}"):
        load(tmp_path / "net2net.ckpt", tmp_path / "bad.yaml")
