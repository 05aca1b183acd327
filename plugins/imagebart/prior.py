"""``imagebart``: a multinomial-diffusion chain whose reverse steps are encoder–decoder autoregressive transformers
(Esser et al., NeurIPS 2021). Scale s < n is p_s(x_{s−1} | x_s) (``EncoderDecoder``); scale n is a decoder-only causal
transformer that ignores x_n, which is exactly uniform. Every scale decodes in raster order with a key/value cache.
``shared_weights`` replaces the paper's independent per-scale networks by one encoder–decoder for all scales."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

import vqbench
from vqbench.backbones import build_backbone, parse_backbone
from vqbench.config import parse, positive
from vqbench.errors import ConfigError
from vqbench.interfaces import Prior
from vqbench.nn import KVCache
from vqbench.sampling import raster_decode

from .chain import MultinomialChain, check_alphacum, geometric_alphacum
from .network import EncoderDecoder, EncoderDecoderConfig

_SMALL_TOP = {"name": "transformer", "dim": 128, "depth": 4, "heads": 4, "dim_head": 32}
# "cpu": sized for the quickstart. "ffhq-2" / "ffhq-4": the paper's FFHQ models (T = 3 and T = 5).
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "scales": 2,
        "residual_logits": True,
        "scale_net": {"dim": 128, "encoder_depth": 2, "decoder_depth": 2, "heads": 4, "dim_head": 32},
        "top_backbone": _SMALL_TOP,
    },
    "ffhq-2": {
        "alphacum": [1.0, 0.636, 0.0],  # their metric-equalised FFHQ schedule
        "residual_logits": False,  # their ffhq scale-1 model is a plain XTransformer
        "scale_net": {"dim": 1152, "encoder_depth": 32, "decoder_depth": 6, "heads": 16, "dim_head": 64},
        "top_backbone": {"name": "transformer", "dim": 1216, "depth": 36, "heads": 16, "dim_head": 64},
    },
    "ffhq-4": {
        "scales": 4,
        "residual_logits": True,  # their ResidualScaledXTransformer
        "kl_weight": [0.0, 0.0, 0.0, 1.0],
        "scale_net": {"dim": 752, "encoder_depth": 18, "decoder_depth": 6, "heads": 16, "dim_head": 64},
        "top_backbone": {"name": "transformer", "dim": 800, "depth": 26, "heads": 16, "dim_head": 64},
    },
}

PerScale = float | list[float]


def per_scale(value: Any, n: int, key: str) -> list[Any]:
    """A setting given once for every scale or as a list of n values (index s − 1 → scale s)."""
    if isinstance(value, list):
        if len(value) != n:
            raise ConfigError(key, f"lists one value per scale: expected {n}, got {len(value)}")
        return list(value)
    return [value] * n


@dataclass
class ImageBARTSampler:
    temperature: PerScale = 1.0  # per scale (the reference ignores it below the top scale)
    top_k: int | list[int] | None = None
    top_p: PerScale | None = None
    chains: int | list[int] | None = None  # inpainting forward–backward chains C_s; default 3 (geometric) or 5, 1 at s = n

    def validate(self, key: str) -> None:
        for name in ("temperature", "top_k", "chains"):
            for value in getattr(self, name) if isinstance(getattr(self, name), list) else [getattr(self, name)]:
                positive(key, name, value)
        for value in self.top_p if isinstance(self.top_p, list) else [self.top_p]:
            if value is not None and not 0.0 < value <= 1.0:
                raise ConfigError(f"{key}.top_p", f"must lie in (0, 1] (the nucleus keeps at least the top token), got {value!r}")


@dataclass
class ImageBARTConfig(ImageBARTSampler):
    preset: Literal["cpu", "ffhq-2", "ffhq-4"] = "cpu"  # fills every field below left unset
    scales: int | None = None  # n, with the geometric schedule ᾱ_s = 1 − s/n
    alphacum: list[float] | None = None  # an explicit schedule [1, ᾱ_1, …, 0] (n = its length − 1)
    scale_net: dict[str, Any] | None = None  # EncoderDecoderConfig of scales s < n
    top_backbone: dict[str, Any] | None = None  # the causal backbone of scale n
    residual_logits: bool | None = None  # exp(λ_s)·f + log(α_s e(x_s) + (1 − α_s)/K) at scales s < n (see README)
    kl_weight: list[float] | None = None  # a_s in a·KL + (1 − a)·CE; default 0 at s = 1, 1 above
    class_conditional: bool = False
    budget_split: Literal["batch", "every"] = "batch"  # batch: each step's batch is split evenly across the scales
    nll_draws: int = 4  # chain draws per grid for the ELBO
    remap_codes: bool = False  # restrict the chain and networks to the codes used in training (see ``prepare``)
    shared_weights: bool = False  # one scale_net for every scale (top included), told the scale; the paper: independent

    def resolved(self) -> dict[str, Any]:
        """The preset's values under the ones set here."""
        preset = PRESETS[self.preset]
        out = {
            name: getattr(self, name) if getattr(self, name) is not None else preset.get(name)
            for name in ("scales", "alphacum", "scale_net", "top_backbone", "kl_weight", "residual_logits")
        }
        if self.alphacum is not None or self.scales is not None:  # an explicit schedule replaces the preset's, weights too
            out["alphacum"], out["scales"], out["kl_weight"] = self.alphacum, self.scales, self.kl_weight
        return out

    def schedule(self, key: str = "params") -> list[float]:
        r = self.resolved()
        if r["alphacum"] is not None:
            check_alphacum(r["alphacum"], f"{key}.alphacum")
            if r["scales"] is not None and r["scales"] != len(r["alphacum"]) - 1:
                raise ConfigError(f"{key}.scales", f"{r['scales']} disagrees with alphacum's {len(r['alphacum']) - 1} scales; give one of them")
            return [float(a) for a in r["alphacum"]]
        positive(key, "scales", r["scales"])
        return geometric_alphacum(r["scales"])

    def validate(self, key: str) -> None:
        super().validate(key)
        n = len(self.schedule(key)) - 1
        r = self.resolved()
        parse(EncoderDecoderConfig, r["scale_net"], f"{key}.scale_net")
        parse_backbone(r["top_backbone"], f"{key}.top_backbone", "transformer")
        for value in per_scale(r["kl_weight"] or 0.0, n, f"{key}.kl_weight"):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{key}.kl_weight", f"each weight must lie in [0, 1], got {value!r}")
        for name in ("temperature", "top_k", "top_p", "chains"):
            per_scale(getattr(self, name), n, f"{key}.{name}")
        positive(key, "nll_draws", self.nll_draws)


class ImageBARTPrior(Prior):
    """Multinomial diffusion over n scales with encoder–decoder AR reverse steps: ELBO likelihood, KV-cache sampling,
    inpainting with known tokens forced at every scale and forward–backward chains."""

    Config = ImageBARTConfig
    sampler_config = ImageBARTSampler
    supports_inpainting = True
    supports_likelihood = True

    @classmethod
    def with_width(cls, params: dict[str, Any], width: int) -> dict[str, Any]:
        """Every scale's network (``scale_net.dim`` and ``top_backbone.dim``) at ``width`` (``priors[].match_params``)."""
        resolved = parse(ImageBARTConfig, params, "params").resolved()
        return {**params, "scale_net": {**resolved["scale_net"], "dim": width}, "top_backbone": {**resolved["top_backbone"], "dim": width}}

    def __init__(self, config: ImageBARTConfig, codebook_size: int, latent_shape: tuple[int, int], num_classes: int = 0):
        super().__init__(config, codebook_size, latent_shape, num_classes)
        r = config.resolved()
        self.alphacum = config.schedule()
        n = len(self.alphacum) - 1
        self.kl_weight = per_scale(r["kl_weight"], n, "params.kl_weight") if r["kl_weight"] is not None else [0.0] + [1.0] * (n - 1)
        self.resolved_settings = r
        self.remapped: tuple[int, int] | None = None  # (codes used in training, symbols) once ``prepare`` remapped
        self.unseen_codes = 0
        self._build(codebook_size)

    def _build(self, symbols: int) -> None:
        """The chain and networks over ``symbols`` token values (the codebook, or the used codes after remapping)."""
        r, config = self.resolved_settings, self.config
        self.chain = MultinomialChain(self.alphacum, symbols)
        n, length = self.chain.scales, self.latent_shape[0] * self.latent_shape[1]
        classes = self.num_classes if config.class_conditional else 0
        net_config = parse(EncoderDecoderConfig, r["scale_net"], "params.scale_net")
        self.start_token = symbols
        if config.shared_weights:  # one encoder–decoder for s = 1..n; at s = n its encoder sees the uniform x_n
            self.scale_nets = nn.ModuleList([EncoderDecoder(net_config, symbols, length, bool(r["residual_logits"]), classes, num_scales=n)])
        else:
            self.scale_nets = nn.ModuleList(EncoderDecoder(net_config, symbols, length, bool(r["residual_logits"]), classes) for _ in range(n - 1))
            top = {**r["top_backbone"], **({"class_conditional": True} if classes else {})}
            self.net = build_backbone(top, "params.top_backbone", "transformer", symbols + 1, symbols, self.latent_shape, classes, causal=True)
        split = (
            f"each step's batch is split evenly across them (every scale sees 1/{n} of the batch)"
            if config.budget_split == "batch"
            else f"every scale trains on each step's whole batch ({n}× the compute of one network)"
        )
        remap = f"; codebook remapped to the {self.remapped[0]} codes used in training" if self.remapped else ""
        shared = "; one network shared across the scales (given the scale index)" if config.shared_weights else ""
        self.training_note = f"{n} scales; {split}{remap}{shared}"

    def prepare(self, train_codes: torch.Tensor) -> None:
        """With ``remap_codes``: restrict the chain and the networks to the codes the training grids use (their FFHQ
        models used 548 of 1024). Codes never seen in training share one extra symbol (decoded as the first of them)."""
        if not self.config.remap_codes:
            return
        used = torch.unique(train_codes.flatten().cpu()).long()
        seen = set(used.tolist())
        unseen = [c for c in range(self.codebook_size) if c not in seen]
        code_of_symbol = torch.cat([used, used.new_tensor(unseen[:1])])  # new_tensor: CPU even under a meta device
        symbol_of_code = used.new_full((self.codebook_size,), len(used))
        symbol_of_code[used] = torch.arange(len(used), device=used.device)
        self.unseen_codes = len(unseen)
        self.register_buffer("symbol_of_code", symbol_of_code)
        self.register_buffer("code_of_symbol", code_of_symbol.long())
        self.remapped = (len(used), len(code_of_symbol))
        self._build(len(code_of_symbol))

    def to_symbols(self, codes: torch.Tensor) -> torch.Tensor:
        return self.symbol_of_code.to(codes.device)[codes] if self.remapped else codes

    def to_codes(self, symbols: torch.Tensor) -> torch.Tensor:
        return self.code_of_symbol.to(symbols.device)[symbols] if self.remapped else symbols

    # ----------------------------------------------------------------------------------------------- networks
    def scale_net(self, s: int) -> tuple[EncoderDecoder, int | None]:
        """The encoder–decoder of scale s and the scale index it is given (0-based; None for a per-scale network)."""
        if self.config.shared_weights:
            return self.scale_nets[0], s - 1
        return self.scale_nets[s - 1], None

    def logits(self, s: int, x_s: torch.Tensor, x_prev: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits B×N×K of p_s(x_{s−1} | x_s) at every position of x_{s−1} (float32)."""
        if s == self.chain.scales and not self.config.shared_weights:
            start = torch.full_like(x_prev[:, :1], self.start_token)
            return self.net(torch.cat([start, x_prev[:, :-1]], dim=1), labels).float()
        net, scale = self.scale_net(s)
        transition = self.chain.transition_log_probs(x_s, s) if net.log_scale is not None else None
        return net(x_s, x_prev, transition, labels, scale).float()

    def _scale_terms(self, s: int, x0: torch.Tensor, x_s: torch.Tensor, x_prev: torch.Tensor, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """(CE of x_{s−1}, KL(q(x_{s−1} | x_s, x0) ‖ p_s)), each summed over tokens per grid (nats)."""
        log_p = F.log_softmax(self.logits(s, x_s, x_prev, labels), dim=-1)
        ce = -log_p.gather(-1, x_prev[..., None])[..., 0].sum(1)
        q = self.chain.posterior(x_s, x0, s)
        kl = (torch.special.xlogy(q, q) - q * log_p).sum((1, 2))
        return ce, kl

    # ----------------------------------------------------------------------------------------------- training
    def loss(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over scales of a_s·KL + (1 − a_s)·CE per token, teacher-forced on (x_{s−1}, x_s) drawn jointly from x0."""
        x0, n = self.to_symbols(codes.flatten(1)), self.chain.scales
        if self.config.budget_split == "batch" and len(x0) < n:
            raise ValueError(f"imagebart splits each batch across its {n} scales: the batch size must be at least {n}, got {len(x0)}")
        # a random partition: the runner's batches come sorted by index, so contiguous slices would bias each scale's data
        parts = torch.randperm(len(x0), device=x0.device).tensor_split(n) if self.config.budget_split == "batch" else [slice(None)] * n
        total = x0.new_zeros((), dtype=torch.float32)
        for s, idx in enumerate(parts, 1):
            part, part_labels = x0[idx], (labels[idx] if labels is not None else None)
            x_prev = self.chain.redraw(part, 1.0 - self.alphacum[s - 1], None)  # x_{s−1} ~ q(· | x0)
            x_s = self.chain.step(x_prev, s, None)
            ce, kl = self._scale_terms(s, part, x_s, x_prev, part_labels)
            a = self.kl_weight[s - 1]
            total = total + (a * kl + (1.0 - a) * ce).mean() / part.shape[1]
        return total / n

    # ----------------------------------------------------------------------------------------------- likelihood
    def nll(self, codes: torch.Tensor, generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """ELBO in bits per token: [CE_1 + Σ_{s≥2} KL_s + KL(q(x_n | x0) ‖ U)] / (N ln 2), averaged over
        ``nll_draws`` joint draws of the chain; ``nll_stderr`` holds each grid's standard error over the draws."""
        x0 = self.to_symbols(codes.flatten(1))
        bits = self._symbol_elbo(x0, generator, labels)
        if self.remapped and self.unseen_codes > 1:  # the shared symbol stands for any unseen code: name which one
            bits = bits + (x0 == self.remapped[0]).sum(1) * math.log2(self.unseen_codes) / x0.shape[1]
        return bits

    def _symbol_elbo(self, x0: torch.Tensor, generator: torch.Generator | None, labels) -> torch.Tensor:
        """The ELBO of symbol grids x0 (B×N) in bits per token."""
        draws = []
        for _ in range(self.config.nll_draws):
            xs = self.chain.trajectory(x0, generator)
            nats = torch.zeros(len(x0), device=x0.device)
            for s in range(1, self.chain.scales + 1):
                ce, kl = self._scale_terms(s, x0, xs[s], xs[s - 1], labels)
                nats = nats + (ce if s == 1 else kl)
            q_top = self.chain.marginal(x0, self.chain.scales)
            nats = nats + torch.special.xlogy(q_top, q_top * self.chain.num_codes).sum((1, 2))  # 0 when ᾱ_n = 0
            draws.append(nats / (x0.shape[1] * math.log(2)))
        bits = torch.stack(draws)
        k = len(draws)
        self.nll_stderr = bits.std(0) / math.sqrt(k) if k > 1 else torch.zeros_like(bits[0])
        self.nll_note = f"ELBO over the {self.chain.scales}-scale chain, {k} chain draw(s) per grid"
        return bits.mean(0)

    # ----------------------------------------------------------------------------------------------- sampling
    def sample(self, n, latent_shape, generator, labels=None, **opts) -> torch.Tensor:
        self.check_shape(latent_shape)
        return self.to_codes(self.generate(n, generator, labels, **opts)).view(n, *self.latent_shape)

    def inpaint(self, codes, keep_mask, generator, labels=None, **opts) -> torch.Tensor:
        given = self.to_symbols(codes.flatten(1))
        keep_mask = keep_mask.to(codes.device)
        out = self.to_codes(self.generate(codes.shape[0], generator, labels, given=given, keep=keep_mask.flatten(1), **opts))
        return torch.where(keep_mask, codes, out.view_as(codes))  # kept codes exactly as given, even unseen ones

    def default_chains(self) -> list[int]:
        """C_s: 3 for the geometric schedule, else 5; 1 at the top scale (whose model ignores x_n)."""
        c = 3 if self.alphacum == geometric_alphacum(self.chain.scales) else 5
        return [c] * (self.chain.scales - 1) + [1]

    @torch.no_grad()
    def generate(self, batch: int, generator: torch.Generator, labels=None, given=None, keep=None, **opts) -> torch.Tensor:
        """x_n uniform, then x_{s−1} ~ p_s(· | x_s) for s = n … 1; where ``keep`` is True the ``given`` token is forced
        at every scale, and each scale s < n runs C_s − 1 forward–backward chains (inpainting only)."""
        cfg, n, device = self.sampler(**opts), self.chain.scales, self.device
        length = self.latent_shape[0] * self.latent_shape[1]
        temperature, top_k, top_p = (per_scale(getattr(cfg, k), n, f"sampling.{k}") for k in ("temperature", "top_k", "top_p"))
        chains = per_scale(cfg.chains, n, "sampling.chains") if cfg.chains is not None else self.default_chains()
        if labels is not None:
            labels = labels.to(device)
        x = torch.randint(self.chain.num_codes, (batch, length), generator=generator, device=generator.device).to(device)  # x_n
        self.last_nfe = 0
        for s in range(n, 0, -1):
            settings = (temperature[s - 1], top_k[s - 1], top_p[s - 1])
            x_prev = self._decode_scale(s, x, generator, settings, labels, given, keep)
            rounds = chains[s - 1] if keep is not None and s < n else 1
            for c in range(1, rounds):
                renoised = self.chain.redraw(x_prev, (1.0 - c / rounds) * self.chain.beta(s), generator)  # every token
                x_prev = self._decode_scale(s, renoised, generator, settings, labels, given, keep)
            x = x_prev
        return x

    def _decode_scale(self, s: int, x_s: torch.Tensor, generator, settings: tuple, labels, given, keep) -> torch.Tensor:
        """x_{s−1} in raster order with the key/value cache (one decoder step per token, one encoder pass)."""
        if s == self.chain.scales and not self.config.shared_weights:

            def step(token: torch.Tensor, i: int, cache: KVCache) -> torch.Tensor:
                return self.net(token, labels, cache=cache, offset=i)[:, -1]
        else:
            net, scale = self.scale_net(s)
            memory = net.encode(x_s, labels, scale)
            residual = net.log_scale is not None
            self.last_nfe += 1

            def step(token: torch.Tensor, i: int, cache: KVCache) -> torch.Tensor:
                logits = net.decode(token, memory, cache, offset=i, labels=labels, scale=scale)[:, -1]
                # the residual term of position i only (B×K): no B×N×K tensor while sampling large grids
                return net.residual(logits, self.chain.transition_log_probs(x_s[:, i], s) if residual else None, scale)

        return self._raster(step, x_s.shape[0], x_s.shape[1], generator, settings, given, keep)

    def _raster(self, step: Callable, batch: int, length: int, generator, settings: tuple, given, keep) -> torch.Tensor:
        cache = KVCache()
        out = raster_decode(
            lambda tokens, i: step(tokens[:, i : i + 1], i, cache), batch, length, self.start_token, generator, self.device, *settings, given, keep
        )
        self.last_nfe += length
        return out

    def describe(self) -> dict[str, Any]:
        from vqbench.config import to_dict

        params = to_dict(self.config)
        params.update({k: v for k, v in self.resolved_settings.items() if k not in ("scales", "alphacum")})
        params["alphacum"] = [round(a, 6) for a in self.alphacum]
        params["kl_weight"] = self.kl_weight
        if self.config.shared_weights:
            params.pop("top_backbone", None)  # unused: the shared network serves the top scale too
        return params


@vqbench.hookimpl
def vqbench_register_priors(registry):
    registry.register("imagebart", ImageBARTPrior)


@vqbench.hookimpl
def vqbench_conformance_cases():
    from vqbench.testing import IMAGEBART_SCALE_NET, SHAPE, TRANSFORMER, PriorCase  # test-only (needs pytest), so imported here

    n = SHAPE[0] * SHAPE[1]
    return [
        PriorCase(
            "imagebart",
            {"scales": 2, "scale_net": IMAGEBART_SCALE_NET, "top_backbone": TRANSFORMER, "class_conditional": True, "residual_logits": False},
            conditional=True,
            nfe=lambda opts: opts["scales"] * n + opts["scales"] - 1,  # decoder steps + encoder passes
        ),
        PriorCase(
            "imagebart",
            {"alphacum": [1.0, 0.7, 0.3, 0.0], "scale_net": IMAGEBART_SCALE_NET, "top_backbone": TRANSFORMER, "residual_logits": True},
            nfe=lambda opts: 3 * n + 2,
            id="imagebart-residual-3-scales",
        ),
        PriorCase(
            "imagebart",
            {"scales": 2, "scale_net": IMAGEBART_SCALE_NET, "class_conditional": True, "residual_logits": True, "shared_weights": True},
            conditional=True,
            nfe=lambda opts: opts["scales"] * n + opts["scales"],  # the shared network encodes x_n at the top scale too
            id="imagebart-shared-weights",
        ),
    ]
