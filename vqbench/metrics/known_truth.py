"""Known-truth metrics for synthetic latents: NLL minus the exact entropy, exact template precision and recall."""

from __future__ import annotations

import math

import torch

from ..interfaces import Column, Metric


def template_precision_recall(samples: torch.Tensor, templates: torch.Tensor, radius: int) -> tuple[float, float]:
    """Precision: fraction of samples within Hamming ``radius`` of some template. Recall: fraction of templates with
    at least one sample within ``radius``."""
    distance = (samples.flatten(1)[:, None, :] != templates.flatten(1)[None]).sum(dim=-1)  # samples × templates
    within = distance <= radius
    return float(within.any(dim=1).float().mean()), float(within.any(dim=0).float().mean())


class KnownTruthMetric(Metric):
    """Gap between held-out NLL and the source's exact entropy; template precision/recall (synthetic latents)."""

    def columns(self, config) -> dict[str, Column]:
        return {
            "nll_gap": Column("lower", "NLL − H (bits)", 4),
            "template_precision": Column("higher", "template precision", 3),
            "template_recall": Column("higher", "template recall", 3),
        }

    def compute(self, ctx, config) -> dict[str, float]:
        truth = ctx.data.train.meta.get("truth") or {}
        out = {name: math.nan for name in self.columns(config)}
        if "entropy_bits_per_token" in truth and ctx.prior.supports_likelihood:
            out["nll_gap"] = ctx.held_out_nll() - float(truth["entropy_bits_per_token"])
        if "templates" in truth:
            templates = torch.tensor(truth["templates"])
            out["template_precision"], out["template_recall"] = template_precision_recall(ctx.samples, templates, int(truth["template_radius"]))
        return out
