"""Hook specifications: each hook hands a registry to every plugin, which adds its entries.

A plugin is any module or object with functions marked ``@vqbench.hookimpl`` named like the specs below.
Built-in plugins (``plugins/``) and third-party packages are both found through the ``vqbench`` entry-point group.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("vqbench")
hookimpl = pluggy.HookimplMarker("vqbench")


@hookspec
def vqbench_register_tokenizers(registry):
    """Add tokenizer classes (subclasses of ``vqbench.interfaces.Tokenizer``)."""


@hookspec
def vqbench_register_priors(registry):
    """Add prior classes (subclasses of ``vqbench.interfaces.Prior``)."""


@hookspec
def vqbench_register_backbones(registry):
    """Add backbone classes (subclasses of ``vqbench.interfaces.Backbone``)."""


@hookspec
def vqbench_register_datasets(registry):
    """Add image or latent dataset sources (subclasses of ``vqbench.interfaces.ImageSource``)."""


@hookspec
def vqbench_register_metrics(registry):
    """Add metrics (subclasses of ``vqbench.interfaces.Metric``)."""


@hookspec
def vqbench_register_feature_extractors(registry):
    """Add image feature extractors used by FID/KID/PRDC (subclasses of ``vqbench.interfaces.FeatureExtractor``)."""


@hookspec
def vqbench_register_checkpoint_formats(registry):
    """Add readers of prior checkpoints written elsewhere (subclasses of ``vqbench.checkpoints.CheckpointFormat``)."""


@hookspec
def vqbench_register_trackers(registry):
    """Add experiment trackers named by the benchmark's ``tracking`` key (subclasses of ``vqbench.tracking.Tracker``)."""


@hookspec
def vqbench_conformance_cases():
    """Return tiny test configurations for the priors and backbones this plugin registers: a list of
    ``vqbench.testing.PriorCase`` / ``BackboneCase`` (or one). The conformance suite runs the shared contract on each;
    a registered prior or backbone without one is skipped with a note. Import ``vqbench.testing`` inside the hook (it
    needs pytest, which only the tests install)."""
