"""The built-in metrics, registered like any plugin's."""

from __future__ import annotations

import vqbench
from vqbench.metrics.attributes import ClassAccuracyMetric, FactorDistributionMetric
from vqbench.metrics.big_samples import BigSamplesMetric
from vqbench.metrics.class_rejection import ClassRejectionMetric
from vqbench.metrics.fid import FIDMetric, KIDMetric
from vqbench.metrics.inpainting import InpaintingMetric
from vqbench.metrics.known_truth import KnownTruthMetric
from vqbench.metrics.latent_stats import LatentStatsMetric, NLLMetric
from vqbench.metrics.prdc import PRDCMetric
from vqbench.metrics.timing import SampleTimeMetric


@vqbench.hookimpl
def vqbench_register_metrics(registry):
    registry.register("fid", FIDMetric)
    registry.register("kid", KIDMetric)
    registry.register("prdc", PRDCMetric)
    registry.register("nll", NLLMetric)
    registry.register("latent_stats", LatentStatsMetric)
    registry.register("sample_time", SampleTimeMetric)
    registry.register("inpainting", InpaintingMetric)
    registry.register("known_truth", KnownTruthMetric)
    registry.register("class_accuracy", ClassAccuracyMetric)
    registry.register("factor_distribution", FactorDistributionMetric)
    registry.register("big_samples", BigSamplesMetric)
    registry.register("class_rejection", ClassRejectionMetric)
