"""VQ-GAN: taming-transformers state-dict layout, a functional reference forward, checkpoint loading, training."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import vqbench
from vqbench.errors import DataError

TINY = {
    "embed_dim": 32,
    "n_embed": 16,
    "ddconfig": {"z_channels": 32, "resolution": 16, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8]},
}


def vqgan_cls():
    return vqbench.registries().tokenizers.get("vqgan")


def random_model(seed: int = 0):
    from vqbench.config import parse

    cls = vqgan_cls()
    torch.manual_seed(seed)
    model = cls(parse(cls.Config, TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_ffhq_preset_matches_the_published_taming_checkpoint():
    with torch.device("meta"):
        model = vqgan_cls().from_preset("ffhq-f16")
    assert len(model.state_dict()) == 343
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 72.1
    assert model.latent_shape(256) == (16, 16) and model.codebook_size == 1024


def test_megapixel_preset_gives_32x32_latents_at_1024():
    with torch.device("meta"):
        model = vqgan_cls().from_preset("megapixel-f32")
    assert model.downsample_factor == 32 and model.latent_shape(1024) == (32, 32) and model.codebook_size == 8192


def _expected_keys() -> set[str]:
    """The taming names for TINY, written out from taming's construction rules."""

    def res(p, shortcut=False):
        names = [f"{p}.{m}.{t}" for m in ("norm1", "conv1", "norm2", "conv2") for t in ("weight", "bias")]
        return names + ([f"{p}.nin_shortcut.weight", f"{p}.nin_shortcut.bias"] if shortcut else [])

    def attn(p):
        return [f"{p}.{m}.{t}" for m in ("norm", "q", "k", "v", "proj_out") for t in ("weight", "bias")]

    def wb(p):
        return [f"{p}.weight", f"{p}.bias"]

    keys = wb("encoder.conv_in") + res("encoder.down.0.block.0") + wb("encoder.down.0.downsample.conv")
    keys += res("encoder.down.1.block.0", shortcut=True) + attn("encoder.down.1.attn.0")
    keys += res("encoder.mid.block_1") + attn("encoder.mid.attn_1") + res("encoder.mid.block_2")
    keys += wb("encoder.norm_out") + wb("encoder.conv_out")
    keys += wb("decoder.conv_in") + res("decoder.mid.block_1") + attn("decoder.mid.attn_1") + res("decoder.mid.block_2")
    keys += res("decoder.up.1.block.0") + res("decoder.up.1.block.1") + attn("decoder.up.1.attn.0") + attn("decoder.up.1.attn.1")
    keys += wb("decoder.up.1.upsample.conv")
    keys += res("decoder.up.0.block.0", shortcut=True) + res("decoder.up.0.block.1")
    keys += wb("decoder.norm_out") + wb("decoder.conv_out") + wb("quant_conv") + wb("post_quant_conv")
    return set(keys + ["quantize.embedding.weight"])


def test_state_dict_keys_follow_taming_layout():
    assert set(random_model().state_dict()) == _expected_keys()


# ---- a functional reference written from taming's definitions (GroupNorm 32, swish, bmm attention) -------------
def _gn(sd, p, x):
    return F.group_norm(x, 32, sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-6)


def _conv(sd, p, x, **kw):
    return F.conv2d(x, sd[f"{p}.weight"], sd[f"{p}.bias"], **kw)


def _res(sd, p, x):
    h = _conv(sd, f"{p}.conv1", F.silu(_gn(sd, f"{p}.norm1", x)), padding=1)
    h = _conv(sd, f"{p}.conv2", F.silu(_gn(sd, f"{p}.norm2", h)), padding=1)
    return (_conv(sd, f"{p}.nin_shortcut", x) if f"{p}.nin_shortcut.weight" in sd else x) + h


def _attn(sd, p, x):
    h = _gn(sd, f"{p}.norm", x)
    b, c, hh, ww = x.shape
    q = _conv(sd, f"{p}.q", h).reshape(b, c, hh * ww).permute(0, 2, 1)
    k = _conv(sd, f"{p}.k", h).reshape(b, c, hh * ww)
    v = _conv(sd, f"{p}.v", h).reshape(b, c, hh * ww)
    w = torch.softmax(torch.bmm(q, k) * c**-0.5, dim=2)
    out = torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww)
    return x + _conv(sd, f"{p}.proj_out", out)


def reference_encode(sd, x):
    h = _conv(sd, "encoder.conv_in", x, padding=1)
    h = _res(sd, "encoder.down.0.block.0", h)
    h = _conv(sd, "encoder.down.0.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2)
    h = _attn(sd, "encoder.down.1.attn.0", _res(sd, "encoder.down.1.block.0", h))
    h = _res(sd, "encoder.mid.block_2", _attn(sd, "encoder.mid.attn_1", _res(sd, "encoder.mid.block_1", h)))
    h = _conv(sd, "encoder.conv_out", F.silu(_gn(sd, "encoder.norm_out", h)), padding=1)
    z = _conv(sd, "quant_conv", h)
    e = sd["quantize.embedding.weight"]
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    return torch.cdist(flat.double(), e.double()).argmin(1).reshape(z.shape[0], z.shape[2], z.shape[3]), z


def reference_decode(sd, codes):
    z = sd["quantize.embedding.weight"][codes].permute(0, 3, 1, 2)
    h = _conv(sd, "decoder.conv_in", _conv(sd, "post_quant_conv", z), padding=1)
    h = _res(sd, "decoder.mid.block_2", _attn(sd, "decoder.mid.attn_1", _res(sd, "decoder.mid.block_1", h)))
    for j in range(2):
        h = _attn(sd, f"decoder.up.1.attn.{j}", _res(sd, f"decoder.up.1.block.{j}", h))
    h = _conv(sd, "decoder.up.1.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"), padding=1)
    for j in range(2):
        h = _res(sd, f"decoder.up.0.block.{j}", h)
    return _conv(sd, "decoder.conv_out", F.silu(_gn(sd, "decoder.norm_out", h)), padding=1).clamp(-1, 1)


def test_encode_and_decode_match_the_reference_forward():
    model = random_model()
    sd = model.state_dict()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    ref_codes, ref_z = reference_encode(sd, x)
    with torch.no_grad():
        torch.testing.assert_close(model.pre_quant(x), ref_z, atol=1e-5, rtol=1e-5)
    codes = model.encode(x)
    assert codes.dtype == torch.int64 and codes.shape == (3, 8, 8)
    assert torch.equal(codes, ref_codes)
    images = model.decode(codes)
    assert images.dtype == torch.float32 and images.shape == (3, 3, 16, 16)
    torch.testing.assert_close(images, reference_decode(sd, codes), atol=1e-5, rtol=1e-5)


def near_ties(codes: int = 512, dim: int = 64, count: int = 2000) -> tuple[torch.nn.Module, torch.Tensor]:
    """A quantizer and encoder outputs (count×dim×1×1) close to the midpoint of two of its codes."""
    from vqbench_plugins.vqgan.quantizer import VectorQuantizer

    torch.manual_seed(0)
    quantizer = VectorQuantizer(codes, dim)
    with torch.no_grad():
        quantizer.embedding.weight.normal_()
    w = quantizer.embedding.weight.detach()
    i, j = torch.randint(codes, (count,)), torch.randint(codes, (count,))
    t = 0.5 + 0.02 * torch.randn(count, 1)
    return quantizer, (t * w[i] + (1 - t) * w[j]).view(count, dim, 1, 1)


def test_training_under_bf16_autocast_picks_the_codes_encode_picks():
    """Training quantizes under autocast, ``encode`` outside it: both must choose the nearest code in float32 (a
    bf16 distance product flips about 1 % of near ties)."""
    quantizer, z = near_ties()
    reference = quantizer.codes(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(quantizer.codes(z), reference)
        assert torch.equal(quantizer(z)[2], reference)


def test_loads_a_taming_lightning_checkpoint_with_its_yaml(tmp_path):
    model = random_model(1)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    weights["loss.discriminator.main.0.weight"] = torch.zeros(2)  # ignored at inference
    weights["loss.perceptual_loss.lin0.model.1.weight"] = torch.zeros(2)
    torch.save({"state_dict": weights, "global_step": 10}, tmp_path / "last.ckpt")
    (tmp_path / "model.yaml").write_text(
        yaml.safe_dump(
            {
                "model": {
                    "target": "taming.models.vqgan.VQModel",
                    "params": {
                        **TINY,
                        "ddconfig": {**TINY["ddconfig"], "double_z": False, "in_channels": 3, "out_ch": 3, "dropout": 0.0},
                        "lossconfig": {"target": "x"},
                    },
                }
            }
        )
    )
    loaded = vqbench.load_tokenizer("vqgan", checkpoint=str(tmp_path / "last.ckpt"), config=str(tmp_path / "model.yaml"))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded.encode(x), model.encode(x))
    torch.testing.assert_close(loaded.decode(model.encode(x)), model.decode(model.encode(x)))


def test_net2net_prefix_is_accepted(tmp_path):
    model = random_model(2)
    torch.save({"state_dict": {f"first_stage_model.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "n2n.ckpt")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"model": {"params": TINY}}))
    loaded = vqbench.load_tokenizer("vqgan", checkpoint=str(tmp_path / "n2n.ckpt"), config=str(tmp_path / "m.yaml"))
    assert torch.equal(loaded.quantize.embedding.weight, model.quantize.embedding.weight)


def test_mismatched_yaml_is_reported(tmp_path):
    torch.save({"state_dict": random_model().state_dict()}, tmp_path / "last.ckpt")
    wrong = {**TINY, "n_embed": 32}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"model": {"params": wrong}}))
    with pytest.raises(DataError, match="does not match the VQ-GAN architecture"):
        vqbench.load_tokenizer("vqgan", checkpoint=str(tmp_path / "last.ckpt"), config=str(tmp_path / "m.yaml"))
    with pytest.raises(DataError, match="needs its YAML config"):
        vqbench.load_tokenizer("vqgan", checkpoint=str(tmp_path / "last.ckpt"))


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_code_is_not_executed_on_load(tmp_path, capsys):
    with open(tmp_path / "evil.ckpt", "wb") as handle:
        pickle.dump({"state_dict": _Evil()}, handle)
    with pytest.raises(DataError, match="weights_only=True"):
        vqbench.load_tokenizer("vqgan", checkpoint=str(tmp_path / "evil.ckpt"), config="unused.yaml")
    assert "code ran" not in capsys.readouterr().out


def test_vqbench_save_load_round_trip(tmp_path):
    model = random_model(3)
    model.save(tmp_path / "tok.pt")
    loaded = vqbench.load_tokenizer("vqgan", checkpoint=str(tmp_path / "tok.pt"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_training_reduces_reconstruction_error_and_resumes(tmp_path):
    from vqbench_plugins.toyfaces import ToyFaces, ToyFacesConfig

    from vqbench.config import parse

    cls = vqgan_cls()
    source = ToyFaces(ToyFacesConfig(count=64), 16)
    idx = np.arange(64)
    cfg = parse(cls.TrainConfig, {"steps": 40, "batch_size": 8, "disc_start": 30, "checkpoint_every": 20, "lr": 3e-3})
    torch.manual_seed(0)
    model = cls.from_preset("tiny", {"n_embed": 32, "ddconfig": {"resolution": 16, "ch": 16}})
    x = source.batch(idx)[0]  # every training image, in eval mode: a stable average, not one noisy batch

    def reconstruction_error() -> float:
        with torch.no_grad():
            return F.l1_loss(model.eval()(x)[0], x).item()

    before = reconstruction_error()
    stats = cls.fit(model, source, idx, cfg, checkpoint=tmp_path / "state.pt", seed=0)
    assert stats["steps"] == 40 and (tmp_path / "state.pt").is_file()
    # measured ratio 0.91 (at lr 1e-3: 0.92, above the former 0.9 bound on some CPUs); without training 1.0
    assert reconstruction_error() < 0.97 * before
    # a finished checkpoint resumes at its last step: nothing more to do, same weights
    again = cls.from_preset("tiny", {"n_embed": 32, "ddconfig": {"resolution": 16, "ch": 16}})
    assert cls.fit(again, source, idx, cfg, checkpoint=tmp_path / "state.pt", seed=0)["steps"] == 40
    assert torch.equal(again.quantize.embedding.weight, model.quantize.embedding.weight)
