"""Sample seconds per image: vqbench's priors against the public reference samplers, same configuration, on CPU.

    python benchmarks/reference_speed.py --reference-root DIR [--configs ...] [--precision fp32 bf16] [--threads 2]

DIR holds clones of the reference repositories (their code is imported from there, never copied here):

- ``DIR/unleashing-transformers``: absorbing diffusion, ``AbsorbingDiffusion.sample`` and its bidirectional
  ``Transformer`` (models/absorbing_diffusion.py, models/transformer.py);
- ``DIR/taming-transformers``: ``GPT`` and ``sample_with_past`` (taming/modules/transformer/mingpt.py, KV cache) and
  ``Net2NetTransformer.sample`` (taming/models/cond_transformer.py, recomputes the prefix every step);
- ``DIR/sundae-vqgan``: ``HourglassTransformerLM`` and its ``sample`` loop, from the copy of lucidrains'
  hourglass-transformer-pytorch that sundae-vqgan vendors and extends (rotary embeddings, the sampler). It needs
  ``rotary-embedding-torch`` 0.1.x (the API it was written against), importable or installed under
  ``DIR/site-packages`` (``pip install --target DIR/site-packages rotary-embedding-torch==0.1.5``).

Both sides get the same network size (dim, depth, heads, head size), vocabulary, latent shape, steps, batch and
temperature, random weights, the same thread count and precision: fp32, or bf16 autocast with the floating-point
weights of both networks held in bf16 (what ``vqbench speed`` does). Each batch is timed under
``torch.inference_mode``; reference and vqbench calls alternate (A B, B A, ...) and the medians are reported,
since the CPU may be shared.

Semantic differences that remain (the work per step is the same unless stated):

- absorbing: the reference unmasks each still-masked token with probability 1/t at step t (a random count per
  step) and draws a code at every position from ``Categorical`` every step; vqbench (``sampler=absorbing``)
  unmasks exactly the scheduled count at random masked positions and draws codes only there (inverse CDF).
  Both evaluate the network once per step (``steps`` evaluations); vqbench runs the last block's queries, output
  projection and feed-forward, and the logits, at the drawn positions only (``Backbone.logits_at``: the same logits there).
- autoregressive: taming's GPT shares the SOS token with the 1024 codes, vqbench has a separate start token (1025
  embeddings); both output 1024 logits. Both draw with ``torch.multinomial`` vs inverse CDF respectively.
  ``sample_with_past`` concatenates the whole cache every step; vqbench appends to a preallocated cache.
- sundae: the reference applies its 2D rotary embedding to the first 64 channels of the concatenated heads (one
  head) and uses einsum attention; vqbench rotates every head (``rotary: 2d``) and uses SDPA. Update proportion
  0.5 on both sides, early stop off (the reference's ``early_stop=False``). The reference also draws its
  update mask and initial codes from the global RNG; vqbench uses a generator. vqbench's upsampling attention to
  one valley token skips the softmax (exactly 1 over one key).

``--flops`` adds each side's floating-point operations per image (``vqbench.flops``: matrix products and attention,
counted on one extra call outside the timing) and the rate reached, next to the rate of one ``F.linear`` at the
network's widest projection in the same precision (a practical ceiling for this CPU).

Stubbed imports (never executed by the timed code): taming's ``cond_transformer`` imports pytorch_lightning and
taming's ``main`` (training entry point) — a ``LightningModule`` stand-in (``nn.Module``) and an empty ``main`` are
installed while that file loads; ``mingpt`` imports ``transformers.top_k_top_p_filtering`` (used only with top-k,
stubbed when transformers is missing); sundae-vqgan's hourglass imports performer_pytorch's attention (used only
with ``attn_type="performer"``, stubbed when missing). unleashing's ``models/__init__`` (VQGAN, training helpers) is
skipped by loading the package folder without it. Its ``sample`` hard-codes ``device='cuda'``: that one literal is
rewritten to ``'cpu'`` when the function is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import io
import platform
import statistics
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import torch
from torch import nn

from vqbench.config import parse
from vqbench.flops import count
from vqbench.plugins import registries
from vqbench.precision import inference_weights, make_autocast

CPU = torch.device("cpu")
CONFIGS = ("sundae", "ar-kv", "ar-nocache", "absorbing-50", "absorbing-256")


@dataclass
class Case:
    """One configuration: a reference batch sampler and a vqbench batch sampler of the same work."""

    name: str
    reference: Callable[[], Any]
    vqbench: Callable[[], Any]
    modules: list[nn.Module]
    notes: list[str] = field(default_factory=list)


# ---- loading the reference code --------------------------------------------------------------------------------
def load_file(name: str, path: Path) -> ModuleType:
    """Import one source file as module ``name`` (without running its package's ``__init__``)."""
    if not path.is_file():
        raise SystemExit(f"reference file not found: {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def stub(name: str, **attrs: Any) -> ModuleType:
    """Register an empty module (with ``attrs``) for an import the timed code never uses."""
    module = ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _unused(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("stubbed reference import: not used by the timed sampling code")


def load_unleashing(root: Path) -> SimpleNamespace:
    # A package object over models/ without running models/__init__.py (it imports the VQGAN and training utils).
    package = ModuleType("ref_unleashing_models")
    package.__path__ = [str(root / "unleashing-transformers" / "models")]
    sys.modules[package.__name__] = package
    diffusion = importlib.import_module("ref_unleashing_models.absorbing_diffusion")
    transformer = importlib.import_module("ref_unleashing_models.transformer")
    return SimpleNamespace(AbsorbingDiffusion=diffusion.AbsorbingDiffusion, Transformer=transformer.Transformer)


def on_cpu(function: Callable[..., Any]) -> Callable[..., Any]:
    """The same function with its hard-coded ``'cuda'`` device literal replaced by ``'cpu'`` (nothing else changes)."""
    source = textwrap.dedent(inspect.getsource(function))
    patched = source.replace("'cuda'", "'cpu'")
    if patched == source:
        raise SystemExit(f"expected a 'cuda' literal in {function.__qualname__}; the reference changed")
    namespace = dict(function.__globals__)
    exec(compile(patched, inspect.getsourcefile(function) or "<reference>", "exec"), namespace)
    return namespace[function.__name__]


def load_taming(root: Path) -> SimpleNamespace:
    base = root / "taming-transformers"
    sys.path.insert(0, str(base))
    if not importable("transformers"):
        stub("transformers", top_k_top_p_filtering=_unused)  # mingpt: only for top-k filtering, not used here
    mingpt = load_file("ref_taming_mingpt", base / "taming" / "modules" / "transformer" / "mingpt.py")
    saved = {name: sys.modules.get(name) for name in ("pytorch_lightning", "main")}
    if not importable("pytorch_lightning"):
        stub("pytorch_lightning", LightningModule=nn.Module)  # base class of Net2NetTransformer only
    stub("main", instantiate_from_config=_unused)  # taming's training entry point (builds VQGAN/conditioning stages)
    try:
        cond = load_file("ref_taming_cond_transformer", base / "taming" / "models" / "cond_transformer.py")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return SimpleNamespace(GPT=mingpt.GPT, sample_with_past=mingpt.sample_with_past, Net2NetTransformer=cond.Net2NetTransformer)


def load_sundae(root: Path) -> SimpleNamespace:
    extra = root / "site-packages"
    if extra.is_dir():
        sys.path.insert(0, str(extra))
    if not importable("rotary_embedding_torch"):
        raise SystemExit("sundae-vqgan needs rotary-embedding-torch 0.1.x: pip install --target DIR/site-packages rotary-embedding-torch==0.1.5")
    if not importable("performer_pytorch"):
        stub("performer_pytorch")  # only for attn_type="performer"; the configs use vanilla attention
        stub("performer_pytorch.performer_pytorch", Attention=_unused)
    path = root / "sundae-vqgan" / "hourglass_transformer_pytorch" / "hourglass_transformer_pytorch.py"
    return SimpleNamespace(HourglassTransformerLM=load_file("ref_sundae_hourglass", path).HourglassTransformerLM)


# ---- the configurations -----------------------------------------------------------------------------------------
def vqbench_prior(name: str, params: dict[str, Any], codebook: int, shape: tuple[int, int]) -> nn.Module:
    """The prior exactly as ``vqbench speed`` builds it."""
    cls = registries().priors.get(name, "prior")
    return cls(parse(cls.Config, params, "params"), codebook, shape).to(CPU).eval()


def vqbench_sampler(prior: nn.Module, batch: int, shape: tuple[int, int], seed: int, **options: Any) -> Callable[[], Any]:
    generator = torch.Generator(device=CPU).manual_seed(seed)
    return lambda: prior.sample(batch, shape, generator, **options)


def absorbing_case(root: Path, steps: int, args: argparse.Namespace) -> Case:
    ref = load_unleashing(root)
    h, w = args.shape
    hp = SimpleNamespace(
        codebook_size=args.codebook, emb_dim=256, latent_shape=(h, w), total_steps=256, batch_size=args.batch, n_samples=args.batch,
        loss_type="reweighted_elbo", mask_schedule="random", sampler="absorbing", bert_n_emb=256, bert_n_head=8, bert_n_layers=8,
        block_size=h * w, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0,
    )  # fmt: skip
    denoiser = ref.Transformer(hp)
    denoiser.apply(denoiser._init_weights)
    diffusion = ref.AbsorbingDiffusion(hp, denoiser, mask_id=args.codebook, embedding_weight=torch.zeros(args.codebook, 256)).eval()
    sample = on_cpu(ref.AbsorbingDiffusion.sample)

    def reference() -> Any:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the time step every step
            return sample(diffusion, temp=args.temperature, sample_steps=steps)

    prior = vqbench_prior("absorbing", {}, args.codebook, args.shape)  # default: dim 256, depth 8, 8 heads × 32
    run = vqbench_sampler(prior, args.batch, args.shape, args.seed, sampler="absorbing", steps=steps, temperature=args.temperature)
    notes = [f"absorbing, {steps} steps: reference unmasks Bernoulli(1/t) per token per step, vqbench a fixed count per step"]
    return Case(f"absorbing, dim 256, depth 8, {steps} steps", reference, run, [diffusion, prior], notes)


def ar_case(root: Path, kv_cache: bool, args: argparse.Namespace) -> Case:
    ref = load_taming(root)
    length = args.shape[0] * args.shape[1]
    gpt = ref.GPT(vocab_size=args.codebook, block_size=length, n_layer=8, n_head=8, n_embd=256).eval()
    sos = torch.zeros(args.batch, 1, dtype=torch.long)  # taming's unconditional SOS conditioning (sos_token=0)
    if kv_cache:

        def reference() -> Any:
            return ref.sample_with_past(sos, gpt, steps=length, temperature=args.temperature, sample_logits=True)

    else:
        wrapper = SimpleNamespace(transformer=gpt, pkeep=1.0, top_k_logits=None)  # the attributes sample() reads
        empty = torch.zeros(args.batch, 0, dtype=torch.long)

        def reference() -> Any:
            return ref.Net2NetTransformer.sample(wrapper, empty, sos, steps=length, temperature=args.temperature, sample=True)

    prior = vqbench_prior("autoregressive", {}, args.codebook, args.shape)
    run = vqbench_sampler(prior, args.batch, args.shape, args.seed, kv_cache=kv_cache, temperature=args.temperature)
    label = "KV cache (taming sample_with_past)" if kv_cache else "no cache (taming Net2NetTransformer.sample)"
    return Case(f"autoregressive, dim 256, depth 8, {label}", reference, run, [gpt, prior])


def sundae_case(root: Path, args: argparse.Namespace) -> Case:
    ref = load_sundae(root)
    length = args.shape[0] * args.shape[1]
    if args.shape[0] != args.shape[1]:
        raise SystemExit("sundae-vqgan's hourglass assumes square latents")
    net = ref.HourglassTransformerLM(
        num_tokens=args.codebook,
        dim=256,
        max_seq_len=length,
        depth=(2, 4, 2),
        heads=8,
        shorten_factor=4,
        causal=False,
        rotary_pos_emb=True,
        attn_type="vanilla",
        updown_sample_type="linear",
    ).eval()  # fmt: skip  (sundae-vqgan's sample.py arguments; dim_head defaults to 64 on both sides)
    steps, proportion = args.sundae_steps, 0.5

    def reference() -> Any:
        return net.sample(
            steps=steps, nb_samples=args.batch, temperature=args.temperature, sample_proportion=proportion, device=CPU,
            end_temperature=args.temperature, end_sample_proportion=proportion, early_stop=False, status=False, history=False,
        )  # fmt: skip

    params = {"backbone": {"name": "hourglass", "dim": 256, "depth": [2, 4, 2], "heads": 8, "dim_head": 64, "shorten": 4}}
    prior = vqbench_prior("sundae", params, args.codebook, args.shape)
    run = vqbench_sampler(
        prior, args.batch, args.shape, args.seed, steps=steps, early_stop=False, update_proportion=proportion, temperature=args.temperature
    )
    return Case(f"sundae, hourglass dim 256, depth [2, 4, 2], k = 4, {steps} steps", reference, run, [net, prior])


# ---- timing -------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def held_weights(modules: list[nn.Module], precision: str) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.enter_context(inference_weights(module, precision))
        yield


@torch.inference_mode()
def time_case(case: Case, precision: str, repeats: int, seed: int) -> tuple[list[float], list[float]]:
    """Seconds per batch of the reference and of vqbench, alternating which goes first."""
    autocast = make_autocast(CPU, precision)
    timings: dict[str, list[float]] = {"reference": [], "vqbench": []}
    fns = {"reference": case.reference, "vqbench": case.vqbench}
    torch.manual_seed(seed)
    with held_weights(case.modules, precision):
        for fn in fns.values():  # warm-up
            with autocast():
                fn()
        for r in range(repeats):
            for side in ("reference", "vqbench") if r % 2 == 0 else ("vqbench", "reference"):
                start = time.perf_counter()
                with autocast():
                    fns[side]()
                timings[side].append(time.perf_counter() - start)
    return timings["reference"], timings["vqbench"]


def flop_rates(case: Case, precision: str, args: argparse.Namespace, ref_s: float, ours_s: float) -> str:
    """Table cells: GFLOP per image of each side, and GFLOP/s of each side and of one wide ``F.linear``."""
    with held_weights(case.modules, precision), torch.inference_mode(), make_autocast(CPU, precision)():
        ref_f, ours_f = count(case.reference) / args.batch, count(case.vqbench) / args.batch
    return (
        f" {ref_f / 1e9:.1f}; {ours_f / 1e9:.1f} | {ref_f / ref_s / 1e9:.0f}; {ours_f / ours_s / 1e9:.0f}; {linear_rate(case, precision, args):.0f} |"
    )


def linear_rate(case: Case, precision: str, args: argparse.Namespace, repeats: int = 20) -> float:
    """GFLOP/s of ``F.linear`` over the batch's tokens at the widest linear layer of vqbench's network."""
    widest = max((m for m in case.modules[-1].modules() if isinstance(m, nn.Linear)), key=lambda m: m.weight.numel())
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    x = torch.randn(args.batch * args.shape[0] * args.shape[1], widest.in_features, dtype=dtype)
    w = torch.randn(widest.out_features, widest.in_features, dtype=dtype)
    with torch.inference_mode():
        for _ in range(3):
            torch.nn.functional.linear(x, w)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.nn.functional.linear(x, w)
        seconds = (time.perf_counter() - start) / repeats
    return 2 * x.shape[0] * w.numel() / seconds / 1e9


def build(name: str, root: Path, args: argparse.Namespace) -> Case:
    if name == "sundae":
        return sundae_case(root, args)
    if name.startswith("ar-"):
        return ar_case(root, name == "ar-kv", args)
    return absorbing_case(root, int(name.split("-")[1]), args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-root", type=Path, required=True, help="folder holding the reference clones")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--codebook", type=int, default=1024)
    parser.add_argument("--shape", type=lambda s: tuple(int(v) for v in s.lower().split("x")), default=(16, 16))
    parser.add_argument("--sundae-steps", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per side (after one warm-up each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flops", action="store_true", help="add GFLOP per image and GFLOP/s of each side")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = args.reference_root.resolve()
    print(
        f"torch {torch.__version__}, {platform.machine()} CPU ({torch.backends.cpu.get_cpu_capability()}), "
        f"{torch.get_num_threads()} threads, batch {args.batch}, {args.shape[0]}x{args.shape[1]} latents, {args.codebook} codes, "
        f"temperature {args.temperature}, {args.repeats} interleaved repeats (median)\n"
    )
    extra = " GFLOP/img: reference; vqbench | GFLOP/s: reference; vqbench; F.linear |" if args.flops else ""
    print(
        f"| configuration | precision | reference s/img | vqbench s/img | ratio (reference / vqbench) | s/batch, each run: reference; vqbench |{extra}"
    )
    print("| --- | --- | --- | --- | --- | --- |" + " --- | --- |" * args.flops, flush=True)
    notes: list[str] = []
    for name in args.configs:
        torch.manual_seed(args.seed)
        case = build(name, root, args)
        notes += [n for n in case.notes if n not in notes]
        for precision in args.precision:
            ref, ours = time_case(case, precision, args.repeats, args.seed)
            r, v = statistics.median(ref) / args.batch, statistics.median(ours) / args.batch
            runs = f"{' '.join(f'{x:.1f}' for x in ref)}; {' '.join(f'{x:.1f}' for x in ours)}"
            rates = flop_rates(case, precision, args, r, v) if args.flops else ""
            print(f"| {case.name} | {precision} | {r:.3g} | {v:.3g} | {r / v:.2f} | {runs} |{rates}", flush=True)
    for note in notes:
        print(f"\n- {note}")


if __name__ == "__main__":
    main()
