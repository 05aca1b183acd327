"""ImageBART: the forward chain in closed form, the posterior, the ELBO against known entropies, the encoder–decoder's
causality and cache, sampling NFE and inpainting chains."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from vqbench_plugins.imagebart.chain import MultinomialChain, equalised_alphacum, geometric_alphacum
from vqbench_plugins.imagebart.network import EncoderDecoder, EncoderDecoderConfig
from vqbench_plugins.imagebart.schedule import distance_curve
from vqbench_plugins.imagebart.schedule import main as schedule_main
from vqbench_plugins.synthetic_latents import SyntheticLatents, SyntheticLatentsConfig

import vqbench
from vqbench.config import parse
from vqbench.errors import ConfigError
from vqbench.nn import KVCache

from .conftest import fit_for

TINY_NET = {"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "heads": 2, "dim_head": 16}
TINY_TOP = {"name": "transformer", "dim": 32, "depth": 2, "heads": 2, "dim_head": 16}


def imagebart(vocab=8, shape=(4, 4), seed=0, **params):
    cls = vqbench.registries().priors.get("imagebart")
    torch.manual_seed(seed)
    params = {"scale_net": TINY_NET, "top_backbone": TINY_TOP, **params}
    return cls(parse(cls.Config, params, "params"), vocab, shape).eval()


def test_geometric_schedule_and_bad_schedules_are_refused():
    assert geometric_alphacum(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    chain = MultinomialChain(geometric_alphacum(3), 5)
    assert [round(chain.beta(s), 12) for s in (1, 2, 3)] == [round(1 / 3, 12), 0.5, 1.0]  # β = 1/n, 1/(n−1), …, 1
    for bad, message in (([1.0, 0.5], "must run from 1 to 0"), ([1.0, 0.5, 0.6, 0.0], "strictly decreasing")):
        with pytest.raises(ConfigError, match=message):
            imagebart(alphacum=bad)
    with pytest.raises(ConfigError, match="params.scales: 3 disagrees with alphacum's 2 scales"):
        imagebart(alphacum=[1.0, 0.6, 0.0], scales=3)
    with pytest.raises(ConfigError, match=r"params.temperature: lists one value per scale: expected 2, got 3"):
        imagebart(temperature=[1.0, 1.0, 1.0])


def test_marginal_equals_the_product_of_one_step_matrices_and_the_redraw_frequency():
    k = 5
    chain = MultinomialChain([1.0, 0.8, 0.45, 0.1, 0.0], k)
    x0 = torch.tensor([[3]])
    product = torch.eye(k, dtype=torch.float64)
    for s in range(1, chain.scales + 1):
        product = product @ chain.step_matrix(s)
        torch.testing.assert_close(chain.marginal(x0, s)[0, 0].double(), product[3], rtol=0, atol=1e-6)
    # empirical: run the chain 200k times from x0 = 3 and count x_2
    g = torch.Generator().manual_seed(0)
    xs = chain.trajectory(torch.full((200_000, 1), 3), g)
    empirical = torch.bincount(xs[2][:, 0], minlength=k).double() / 200_000
    expected = chain.marginal(x0, 2)[0, 0].double()
    assert (empirical - expected).abs().max() < 4 * math.sqrt(0.25 / 200_000)
    assert torch.equal(xs[-1].unique().sort().values, torch.arange(k))  # β_n = 1: x_n uniform over all codes


def test_posterior_sums_to_one_and_equals_brute_force_bayes():
    k = 6
    chain = MultinomialChain([1.0, 0.7, 0.3, 0.0], k)
    x0 = torch.arange(k).repeat_interleave(k)[None]
    x_s = torch.arange(k).repeat(k)[None]
    for s in (1, 2, 3):
        post = chain.posterior(x_s, x0, s)[0].double()
        torch.testing.assert_close(post.sum(-1), torch.ones(k * k, dtype=torch.float64), rtol=0, atol=1e-6)
        prior_prev = torch.eye(k, dtype=torch.float64)  # q(x_{s−1} | x0) as a matrix over (x0, x_{s−1})
        for r in range(1, s):
            prior_prev = prior_prev @ chain.step_matrix(r)
        step = chain.step_matrix(s)
        for row, (a, b) in enumerate(zip(x0[0].tolist(), x_s[0].tolist())):
            joint = prior_prev[a] * step[:, b]  # Bayes: q(x_{s−1} | x0)·q(x_s | x_{s−1})
            torch.testing.assert_close(post[row], joint / joint.sum(), rtol=0, atol=1e-6)


def test_scale_kl_is_cross_entropy_minus_posterior_entropy():
    prior = imagebart(vocab=8, shape=(2, 3), scales=3)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(8, (5, 6), generator=g)
    x_prev = prior.chain.redraw(x0, 1 - prior.alphacum[1], g)
    x_s = prior.chain.step(x_prev, 2, g)
    _, kl = prior._scale_terms(2, x0, x_s, x_prev, None)  # s = 2: the posterior is not one-hot, its entropy counts
    log_p = F.log_softmax(prior.logits(2, x_s, x_prev), -1)
    q = prior.chain.posterior(x_s, x0, 2)
    assert float(-torch.special.xlogy(q, q).sum()) > 1.0
    reference = torch.distributions.kl_divergence(torch.distributions.Categorical(probs=q), torch.distributions.Categorical(logits=log_p))
    torch.testing.assert_close(kl, reference.sum(1), rtol=1e-5, atol=1e-5)
    cross_entropy = -(q * log_p).sum((1, 2))
    entropy = -torch.special.xlogy(q, q).sum((1, 2))
    torch.testing.assert_close(kl, cross_entropy - entropy, rtol=1e-5, atol=1e-5)


def test_one_scale_nll_equals_the_autoregressive_prior():
    prior = imagebart(scales=1, top_backbone=TINY_TOP)
    ar_cls = vqbench.registries().priors.get("autoregressive")
    ar = ar_cls(parse(ar_cls.Config, {"backbone": TINY_TOP}, "params"), 8, (4, 4)).eval()
    ar.net.load_state_dict(prior.net.state_dict())
    codes = torch.randint(8, (6, 4, 4), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(prior.nll(codes, torch.Generator().manual_seed(0)), ar.nll(codes), rtol=1e-5, atol=1e-6)


def exact_reverse_logits(prior, data_probs: torch.Tensor, k: int, length: int):
    """The true AR conditionals q(x_{s−1}^j | x_{s−1}^{<j}, x_s) of a source over all K^N grids (``data_probs``)."""
    states = torch.tensor(list(itertools.product(range(k), repeat=length)))  # K^N × N
    chain = prior.chain

    def joint(s: int) -> torch.Tensor:  # q(x_{s−1}, x_s) over state indices
        prev = torch.eye(k, dtype=torch.float64)
        for r in range(1, s):
            prev = prev @ chain.step_matrix(r)
        step = chain.step_matrix(s)
        q_prev = torch.stack([prev[states[:, j]][:, states[:, j]] for j in range(length)]).prod(0)  # x0-state × x_{s−1}-state
        q_step = torch.stack([step[states[:, j]][:, states[:, j]] for j in range(length)]).prod(0)
        return (data_probs @ q_prev)[:, None] * q_step

    tables = {s: joint(s) for s in range(1, chain.scales + 1)}
    index = {tuple(v.tolist()): i for i, v in enumerate(states)}

    def logits(s, x_s, x_prev, labels=None):
        table = tables[s]
        out = torch.empty(*x_prev.shape, k, dtype=torch.float64)
        for b in range(len(x_prev)):
            column = table[:, index[tuple(x_s[b].tolist())]]  # ∝ q(x_{s−1} | x_s) over x_{s−1}-states
            for j in range(length):
                match = (states[:, :j] == x_prev[b, :j]).all(1)
                out[b, j] = torch.stack([column[match & (states[:, j] == c)].sum() for c in range(k)])
        return out.clamp_min(1e-300).log().float()

    return logits


def test_with_the_exact_reverse_conditionals_the_elbo_is_the_data_entropy():
    k, length = 3, 2
    probs = torch.tensor([0.30, 0.02, 0.08, 0.05, 0.25, 0.05, 0.10, 0.05, 0.10], dtype=torch.float64)
    entropy = float(-(probs * probs.log2()).sum())
    prior = imagebart(vocab=k, shape=(1, length), scales=3, nll_draws=1)  # 3 scales: x_{s−1} ≠ x0 and α_s ≠ 0 matter
    prior.logits = exact_reverse_logits(prior, probs, k, length)
    g = torch.Generator().manual_seed(0)
    states = torch.tensor(list(itertools.product(range(k), repeat=length)))
    x0 = states[torch.multinomial(probs.float(), 3000, replacement=True, generator=g)]
    bits = prior.nll(x0.view(-1, 1, length), g).double() * length  # bits per grid
    se = float(bits.std() / math.sqrt(len(bits)))
    assert abs(float(bits.mean()) - entropy) < 4 * se, (float(bits.mean()), entropy, se)


def test_decoder_never_sees_later_tokens_and_cached_decoding_equals_the_full_pass():
    torch.manual_seed(0)
    net = EncoderDecoder(parse(EncoderDecoderConfig, TINY_NET), 8, 12, residual_logits=True).eval()
    g = torch.Generator().manual_seed(3)
    x_s, x_prev = torch.randint(8, (2, 12), generator=g), torch.randint(8, (2, 12), generator=g)
    full = net(x_s, x_prev)
    for j in (0, 5, 9):
        changed = x_prev.clone()
        changed[:, j + 1 :] = (changed[:, j + 1 :] + 1) % 8
        other = net(x_s, changed)
        torch.testing.assert_close(full[:, : j + 2], other[:, : j + 2], rtol=0, atol=1e-5)  # output j+1 reads tokens ≤ j
        assert not torch.allclose(full[:, j + 2 :], other[:, j + 2 :])
    x_s_changed = x_s.clone()
    x_s_changed[:, -1] = (x_s_changed[:, -1] + 1) % 8
    assert not torch.allclose(net(x_s_changed, x_prev)[:, 0], full[:, 0])  # the encoder is bidirectional
    memory, cache, inputs = net.encode(x_s), KVCache(), net.shift(x_prev)
    stepped = torch.cat([net.decode(inputs[:, i : i + 1], memory, cache, offset=i) for i in range(12)], dim=1)
    torch.testing.assert_close(stepped, net.decode(inputs, memory), rtol=1e-4, atol=1e-5)


def test_sampling_nfe_counts_decoder_steps_and_encoder_passes():
    prior = imagebart(scales=3)
    prior.sample(2, (4, 4), torch.Generator().manual_seed(0))
    assert prior.last_nfe == 3 * 16 + 2
    keep = torch.zeros(2, 4, 4, dtype=torch.bool)
    keep[:, :2] = True
    codes = torch.randint(8, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    out = prior.inpaint(codes, keep, torch.Generator().manual_seed(0), chains=[3, 2, 1])
    assert torch.equal(out[keep], codes[keep])
    assert prior.last_nfe == (3 + 2 + 1) * 16 + (3 + 2)  # C_s decodes per scale; the top scale has no encoder


def test_inpainting_chains_default_to_three_for_geometric_and_five_otherwise():
    assert imagebart(scales=3).default_chains() == [3, 3, 1]
    assert imagebart(alphacum=[1.0, 0.6, 0.2, 0.0]).default_chains() == [5, 5, 1]


def test_equalised_schedule_spaces_scales_evenly_in_the_distance():
    grid = [1.0, 0.75, 0.5, 0.25, 0.0]
    distances = [0.0, 0.4, 0.6, 0.8, 1.0]  # the distance rises fastest near the clean end
    assert equalised_alphacum(distances, grid, 2) == pytest.approx([1.0, 0.625, 0.0])
    assert equalised_alphacum(distances, grid, 4) == pytest.approx([1.0, 0.84375, 0.625, 0.3125, 0.0])


@pytest.mark.parametrize("kind", ["iid", "markov"])
def test_trained_on_a_known_source_the_elbo_reaches_its_entropy(kind):
    source = SyntheticLatents(SyntheticLatentsConfig(kind=kind, h=4, w=4, codebook_size=8, count=4000))
    entropy = source.truth()["entropy_bits_per_token"]
    train, test = torch.from_numpy(source.generate(4000, 0)), torch.from_numpy(source.generate(500, 1))
    prior = fit_for(imagebart(scales=2, nll_draws=4, scale_net={**TINY_NET, "dim": 64}, top_backbone={**TINY_TOP, "dim": 64}), train, steps=500)
    with torch.inference_mode():
        bits = prior.nll(test, torch.Generator().manual_seed(0))
    gap, se = float(bits.mean()) - entropy, float(bits.std() / math.sqrt(len(bits)))
    assert gap / entropy < 0.05, (float(bits.mean()), entropy)
    assert gap > -4 * se  # a bound: never below the entropy by more than noise


def test_a_distance_linear_in_the_noise_level_equalises_to_the_geometric_schedule():
    """Known truth: with the token-mismatch rate as the distance, d(ᾱ) = (1 − ᾱ)(1 − 1/K), so evenly spaced distances
    are the geometric schedule."""
    codes = torch.randint(16, (4000, 8), generator=torch.Generator().manual_seed(0))
    grid = [1.0 - i / 10 for i in range(11)]
    curve = distance_curve(codes, 16, lambda c: c, lambda a, b: (a != b).float().mean(1), grid, torch.Generator().manual_seed(1))
    assert curve == pytest.approx([(1 - a) * 15 / 16 for a in grid], abs=0.01)
    assert equalised_alphacum(curve, grid, 4) == pytest.approx(geometric_alphacum(4), abs=0.02)


def test_schedule_tool_measures_a_benchmark_and_prints_a_schedule(smoke_config, tmp_path, capsys):
    import yaml

    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    assert schedule_main([str(path), "--scales", "3", "--images", "16", "--grid", "6"]) == 0
    out = capsys.readouterr().out
    line = [row for row in out.splitlines() if row.startswith("alphacum: ")][0]
    values = [float(v) for v in line.removeprefix("alphacum: [").removesuffix("]").split(", ")]
    assert len(values) == 4 and values[0] == 1.0 and values[-1] == 0.0 and values == sorted(values, reverse=True)
    assert "RANDOM" in out  # offline LPIPS is labelled
    assert schedule_main([str(path), "--scales", "0"]) == 2


def test_remapping_restricts_the_chain_to_the_codes_used_in_training():
    train = torch.randint(4, (64, 4, 4), generator=torch.Generator().manual_seed(0)) * 3  # codes 0, 3, 6, 9 of 16
    prior = imagebart(vocab=16, remap_codes=True)
    prior.prepare(train)
    assert prior.chain.num_codes == 5 and prior.remapped == (4, 5)  # 4 used codes + 1 symbol for unseen ones
    assert "remapped to the 4 codes used in training" in prior.training_note
    samples = prior.sample(8, (4, 4), torch.Generator().manual_seed(1))
    assert set(samples.unique().tolist()) <= {0, 1, 3, 6, 9}  # used codes, or the first unseen code (1)
    codes = train[:4].clone()
    codes[0, 0, 0] = 5  # a code never seen in training
    keep = torch.rand(codes.shape, generator=torch.Generator().manual_seed(2)) < 0.5
    keep[0, 0, 0] = True
    out = prior.inpaint(codes, keep, torch.Generator().manual_seed(3))
    assert torch.equal(out[keep], codes[keep])
    assert torch.isfinite(prior.nll(codes, torch.Generator().manual_seed(4))).all()
    again = imagebart(vocab=16, remap_codes=True, seed=5)  # as the runner does: build, prepare, load
    again.prepare(train)
    again.load_state_dict(prior.state_dict())
    assert torch.equal(again.sample(8, (4, 4), torch.Generator().manual_seed(1)), samples)


def test_chains_renoise_every_token_with_the_decreasing_probability_of_section_4_3(monkeypatch):
    prior = imagebart(scales=2)
    beta = prior.chain.beta(1)
    calls = []
    redraw = prior.chain.redraw

    def spy(codes, probability, generator):
        calls.append((probability, codes.clone()))
        return redraw(codes, probability, generator)

    inputs = []
    decode = prior._decode_scale

    def spy_decode(s, x_s, *args):
        inputs.append((s, x_s.clone()))
        return decode(s, x_s, *args)

    monkeypatch.setattr(prior.chain, "redraw", spy)
    monkeypatch.setattr(prior, "_decode_scale", spy_decode)
    codes = torch.randint(8, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    keep = torch.zeros(2, 4, 4, dtype=torch.bool)
    keep[:, :2] = True
    prior.inpaint(codes, keep, torch.Generator().manual_seed(0), chains=[4, 1])
    assert [p for p, _ in calls] == pytest.approx([(1 - c / 4) * beta for c in (1, 2, 3)])
    kept, given = keep.flatten(1), codes.flatten(1)
    assert all(torch.equal(x[kept], given[kept]) for _, x in calls)  # each scale's output has the known tokens forced
    renoised = [x for s, x in inputs[2:]]  # inputs: x_2 (uniform), x_1 as decoded, then the three re-noised x_1
    assert len(renoised) == 3 and any(not torch.equal(x[kept], given[kept]) for x in renoised)  # kept ones re-noised too


def test_sampling_draws_from_the_conditionals_the_loss_trains(monkeypatch):
    """Every sampled token's logits equal the teacher-forced logits of the finished sequence (residual path included)."""
    prior = imagebart(scales=3, residual_logits=True)
    with torch.no_grad():
        for net in prior.scale_nets:
            net.log_scale.fill_(0.5)
    records = []
    decode, raster = prior._decode_scale, prior._raster

    def spy_decode(s, x_s, *args):
        seen: list = []

        def recording_raster(step, *rest):
            return raster(lambda token, i, cache: seen.append(step(token, i, cache).float()) or seen[-1], *rest)

        monkeypatch.setattr(prior, "_raster", recording_raster)
        x_prev = decode(s, x_s, *args)
        records.append((s, x_s, x_prev, torch.stack(seen, 1)))
        return x_prev

    monkeypatch.setattr(prior, "_decode_scale", spy_decode)
    prior.sample(3, (4, 4), torch.Generator().manual_seed(0))
    assert [s for s, *_ in records] == [3, 2, 1]
    for s, x_s, x_prev, stepped in records:
        torch.testing.assert_close(stepped, prior.logits(s, x_s, x_prev), rtol=1e-4, atol=1e-4)


def test_presets_follow_the_reference_and_an_explicit_schedule_drops_the_preset_weights():
    assert imagebart(preset="cpu").scale_nets[0].log_scale is not None
    ffhq2 = vqbench.registries().priors.get("imagebart").Config(preset="ffhq-2").resolved()
    assert ffhq2["residual_logits"] is False and ffhq2["alphacum"] == [1.0, 0.636, 0.0]
    config = vqbench.registries().priors.get("imagebart").Config(preset="ffhq-4", scales=2).resolved()
    assert config["kl_weight"] is None and config["residual_logits"] is True


def test_unseen_codes_pay_for_naming_which_one_they_are():
    train = torch.randint(4, (64, 4, 4), generator=torch.Generator().manual_seed(0)) * 3  # 12 codes of 16 unseen
    prior = imagebart(vocab=16, remap_codes=True)
    prior.prepare(train)
    codes = train[:2].clone()
    codes[:, 0, :2] = torch.tensor([5, 7])  # two unseen codes per grid
    symbols = prior.to_symbols(codes.flatten(1))
    bits = prior.nll(codes, torch.Generator().manual_seed(1))
    plain = prior._symbol_elbo(symbols, torch.Generator().manual_seed(1), None)
    torch.testing.assert_close(bits, plain + 2 * math.log2(12) / 16)


def test_a_benchmark_runs_imagebart_with_remapping(smoke_config, tmp_path):
    import yaml

    from vqbench.cli import main

    smoke_config["priors"] = [{"name": "imagebart", "params": {"remap_codes": True, "scale_net": TINY_NET, "top_backbone": TINY_TOP}}]
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    assert main(["run", str(path)]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "codebook remapped to the" in report and "each step's batch is split evenly" in report


def test_the_batch_split_gives_every_scale_grids_from_the_whole_batch():
    """The runner's batches come sorted by index; contiguous slices would give scale 1 only the low indices."""
    prior = imagebart(scales=2).train()
    codes = torch.arange(8).view(8, 1, 1).expand(8, 4, 4).contiguous()  # grid i is code i everywhere
    first_scale = []
    terms = prior._scale_terms

    def spy(s, x0, *args):
        if s == 1:
            first_scale.extend(x0[:, 0].tolist())
        return terms(s, x0, *args)

    prior._scale_terms = spy
    for seed in range(10):
        torch.manual_seed(seed)
        prior.loss(codes)
    assert len(first_scale) == 40 and max(first_scale) >= 4 and min(first_scale) < 4
