"""``priors[].match_params: ROW``: size a row's network to another row's parameter count, so the comparison a claim
makes is between models of the same size. The width (``Prior.with_width``: ``backbone.dim`` by default) is searched
in multiples of 4; every other setting is kept. Models are built on the meta device: nothing is allocated."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..config import parse
from ..errors import ConfigError
from ..interfaces import Prior
from ..plugins import Registries
from .schema import Benchmark, Variant

log = logging.getLogger(__name__)
STEP = 4  # widths tried: multiples of this
WIDEST = 16384


def count_params(cls: type[Prior], params: dict[str, Any], key: str, geometry: tuple[tuple[int, int], int]) -> int:
    shape, codebook = geometry
    with torch.device("meta"):
        prior = cls(parse(cls.Config, params, key), codebook, shape)
    return sum(p.numel() for p in prior.parameters())


def with_width(cls: type[Prior], params: dict[str, Any], width: int, key: str) -> dict[str, Any]:
    """``params`` with the prior's width set to ``width`` (``Prior.with_width``)."""
    widened = cls.with_width(params, width)
    if widened is None:
        raise ConfigError(f"{key}.match_params", "this prior has no network width to set; size this row explicitly")
    return widened


def matched_width(cls: type[Prior], params: dict[str, Any], target: int, key: str, geometry: tuple[tuple[int, int], int]) -> tuple[int, int]:
    """(width, parameter count) of the multiple of ``STEP`` whose count is closest to ``target`` (``key``: the
    row's section)."""

    def count(units: int) -> int:
        return count_params(cls, with_width(cls, params, units * STEP, key), f"{key}.params", geometry)

    low, high = 1, WIDEST // STEP  # parameter count grows with the width: bisect for the first count ≥ target
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if count(mid) < target else (low, mid)
    options = [w for w in (low - 1, low) if w >= 1]
    counts = {w: count(w) for w in options}
    best = min(options, key=lambda w: abs(counts[w] - target))
    return best * STEP, counts[best]


def match_sizes(bench: Benchmark, regs: Registries, variants: dict[int, list[Variant]], geometry: tuple[tuple[int, int], int]) -> None:
    """Replace, in place, the params of every row with ``match_params`` by the width-matched ones."""
    rows = {variant.row: (i, variant) for i in sorted(variants, reverse=True) for variant in reversed(variants[i])}
    for i, section in enumerate(bench.priors):
        if section.match_params is None:
            continue
        key = f"priors[{i}]"
        if section.match_params not in rows:
            raise ConfigError(f"{key}.match_params", f"no row {section.match_params!r} in this benchmark; rows: {', '.join(rows)}")
        j, reference = rows[section.match_params]
        if j == i:
            raise ConfigError(f"{key}.match_params", "names this row itself; name the row whose size to match")
        target = count_params(regs.priors.get(bench.priors[j].name), reference.params, f"priors[{j}].params", geometry)
        cls = regs.priors.get(section.name, f"{key}.name")
        for n, variant in enumerate(variants[i]):
            width, count = matched_width(cls, variant.params, target, key, geometry)
            variants[i][n] = Variant(variant.label, variant.name, with_width(cls, variant.params, width, key))
            log.info("%s: width %d gives %.3f M parameters (%s: %.3f M)", variant.row, width, count / 1e6, section.match_params, target / 1e6)
