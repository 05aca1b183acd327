"""``classifier``: a small CNN trained on the benchmark's own labelled images, one softmax head per label column.

Its penultimate features serve FID/KID/PRDC in place of Inception (named in the report, never passed off as it) and
its predictions serve the ``class_accuracy`` and ``factor_distribution`` metrics. It is trained on the training
split only, evaluated on the held-out split, and cached by content: dataset fingerprint, resolution, split, training
settings, seed and a digest of this code.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import vqbench
from vqbench.errors import ConfigError
from vqbench.interfaces import FeatureExtractor, ImageSource
from vqbench.io import fingerprint, load_torch, save_torch
from vqbench.provenance import code_digest, code_keyed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierTraining:
    """Architecture and training settings (part of the cache key)."""

    max_input: int = 32  # images are resized to their resolution clamped to [16, max_input] (bilinear, antialiased)
    width: int = 16  # channels of the first stage (doubled twice)
    feature_dims: int = 128  # penultimate features used for FID/KID/PRDC
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    max_images: int = 20000  # training images used at most (the first ones of the training split)


class AttributeNet(nn.Module):
    """Three stride-2 stages of 3×3 convolutions → flatten → ``feature_dims`` features → one linear head per column."""

    def __init__(self, cardinalities: tuple[int, ...], settings: ClassifierTraining, input_size: int):
        super().__init__()
        c, s = settings.width, input_size

        def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(3, c, 1), *block(c, c, 2), *block(c, 2 * c, 1), *block(2 * c, 2 * c, 2), *block(2 * c, 4 * c, 1), *block(4 * c, 4 * c, 2)
        )  # fmt: skip
        side = math.ceil(math.ceil(math.ceil(s / 2) / 2) / 2)
        self.features = nn.Linear(4 * c * side * side, settings.feature_dims)  # flattened: keeps position (jitter factors)
        self.heads = nn.ModuleList(nn.Linear(settings.feature_dims, k) for k in cardinalities)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.body(x).flatten(1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = F.relu(self.embed(x))
        return [head(h) for head in self.heads]


def to_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 B×3×H×W → float [-1, 1] at size×size."""
    x = images.float() / 127.5 - 1.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
    return x


def label_cardinalities(labels: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) + 1 for v in labels.max(axis=0))


def load_inputs(source: ImageSource, indices: np.ndarray, size: int, batch: int = 256) -> tuple[torch.Tensor, np.ndarray]:
    """(network inputs N×3×size×size, the readable indices among ``indices``)."""
    xs, kept = [], []
    for start in range(0, len(indices), batch):
        images, ok = source.batch(indices[start : start + batch])
        if ok:
            xs.append(to_input(images.add(1.0).mul(127.5), size))
            kept.extend(ok)
    return torch.cat(xs), np.asarray(kept, dtype=np.int64)


def train_classifier(
    inputs: torch.Tensor, labels: torch.Tensor, cardinalities: tuple[int, ...], settings: ClassifierTraining, seed: int, device: torch.device
) -> tuple[AttributeNet, float]:
    """Train a fresh ``AttributeNet`` on inputs N×3×S×S (summed cross-entropy over heads, AdamW, one-cycle schedule);
    (net, final loss)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = AttributeNet(cardinalities, settings, inputs.shape[-1]).to(device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        steps_per_epoch = max(1, math.ceil(len(inputs) / settings.batch_size))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=settings.epochs * steps_per_epoch, pct_start=0.15)
        net.train()
        loss = torch.zeros(())
        for _ in range(settings.epochs):
            order = torch.randperm(len(inputs))
            for start in range(0, len(inputs), settings.batch_size):
                idx = order[start : start + settings.batch_size]
                logits = net(inputs[idx].to(device))
                target = labels[idx].to(device)
                loss = sum((F.cross_entropy(out, target[:, j]) for j, out in enumerate(logits)), torch.zeros((), device=device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    return net.eval(), float(loss.detach())


@contextlib.contextmanager
def single_thread(device: torch.device) -> Iterator[None]:
    """On a CPU, one intra-op thread while training: these small convolutions gain little from more, and lose several
    times over when the cores are shared with other work (measured: 3,800 vs 700 images/s on a busy 2-core VM)."""
    previous = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.inference_mode()
def predict_inputs(net: AttributeNet, inputs: torch.Tensor, device: torch.device, batch: int = 256) -> list[torch.Tensor]:
    outs = [[p.softmax(-1).float().cpu() for p in net(inputs[i : i + batch].to(device))] for i in range(0, len(inputs), batch)]
    return [torch.cat(column) for column in zip(*outs)]


class TrainedClassifier(FeatureExtractor):
    """A CNN trained here on the benchmark's labelled images: features for FID/KID/PRDC, predictions for metrics."""

    dims = ClassifierTraining.feature_dims
    real_weights = True  # trained, not random; the description says it is not comparable to Inception
    settings = ClassifierTraining()

    def __init__(self, weights: str | None = None, allow_random: bool = False, seed: int = 0, key: str = "metrics"):
        super().__init__()
        if weights:
            raise ConfigError(f"{key}.feature_weights", "the classifier is trained on the benchmark's own images; remove feature_weights")
        self.seed = seed
        self.net: AttributeNet | None = None
        self.label_names: tuple[str, ...] = ()
        self.cardinalities: tuple[int, ...] = ()
        self.held_out_labels = np.zeros((0, 0), dtype=np.int64)  # labels of the held-out split, aligned with ...
        self.held_out_probs: list[torch.Tensor] = []  # ... the predicted probabilities per column
        self.accuracy: dict[str, float] = {}
        self.input_size = 32
        self.description = "classifier CNN (not trained yet)"

    def prepare(self, data: Any, cache: Path, device: torch.device, key: str = "metrics") -> None:
        source = data.source
        labels = source.labels() if source is not None else None
        if source is None or labels is None or data.test_indices is None:
            raise ConfigError(
                f"{key}.feature_extractor",
                "the classifier is trained on labelled images: it needs an image dataset with labels (toyfaces, digits, "
                "image_folder with params.labels); use inception-v3-compat or random-cnn otherwise",
            )
        labels = np.asarray(labels, dtype=np.int64).reshape(len(source), -1)
        train_idx = np.load(Path(data.train.path) / "source_index.npy")[: self.settings.max_images]
        test_idx = np.asarray(data.test_indices)
        names = tuple(source.label_names) or tuple(f"label{j}" for j in range(labels.shape[1]))
        cards = label_cardinalities(labels)
        self.input_size = min(self.settings.max_input, max(16, source.resolution))
        code = code_digest(type(self), AttributeNet, core=False)  # this file: network, training and settings
        key_ = fingerprint(
            "classifier", source.fingerprint(), source.resolution, train_idx.tolist(), test_idx.tolist(), asdict(self.settings), self.seed, cards
        )  # fmt: skip
        path = code_keyed(Path(cache) / "classifiers", key_, code, ".pt")
        self.label_names, self.cardinalities, self.weights_key = names, cards, path.stem
        self.net = AttributeNet(cards, self.settings, self.input_size)
        if path.is_file():
            log.info("classifier from cache %s", path)
            state = load_torch(path)
            self.net.load_state_dict(state["state_dict"])
            info = state["info"]
            self.held_out_probs = list(state["held_out_probs"])
            self.held_out_labels = state["held_out_labels"].numpy()
        else:
            log.info("training the classifier on %d %s images (%d label columns)", len(train_idx), type(source).__name__, len(cards))
            inputs, kept = load_inputs(source, train_idx, self.input_size)
            with single_thread(device):
                net, loss = train_classifier(inputs, torch.from_numpy(labels[kept]), cards, self.settings, self.seed, device)
            self.net.load_state_dict(net.state_dict())
            test_inputs, test_kept = load_inputs(source, test_idx, self.input_size)
            self.held_out_probs = predict_inputs(net, test_inputs, device)
            self.held_out_labels = labels[test_kept]
            info = {"train_images": len(kept), "held_out_images": len(test_kept), "final_loss": loss, "dataset": type(source).__name__}
            state = {"state_dict": self.net.state_dict(), "info": info, "held_out_probs": self.held_out_probs}
            save_torch(path, state | {"held_out_labels": torch.from_numpy(self.held_out_labels)})
        self.net.eval().requires_grad_(False)
        self.accuracy = {
            name: float((p.argmax(-1).numpy() == self.held_out_labels[:, j]).mean()) for j, (name, p) in enumerate(zip(names, self.held_out_probs))
        }
        self.description = describe(info, self.accuracy)
        log.info("classifier: %s", self.description)

    def _require(self) -> AttributeNet:
        if self.net is None:
            raise RuntimeError("the classifier has not been trained: call prepare(data, cache, device) first")
        return self.net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B×feature_dims) of uint8 images."""
        return self._require().embed(to_input(images, self.input_size))

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Per label column, class probabilities (B×K, CPU float) of uint8 images B×3×H×W."""
        net = self._require()
        device = next(net.parameters()).device
        return [p.softmax(-1).float().cpu() for p in net(to_input(images.to(device), self.input_size))]


def describe(info: dict[str, Any], accuracy: dict[str, float]) -> str:
    """E.g. "classifier CNN trained here on 2700 ToyFaces images, held-out accuracy 91.2 % (mean of 11 label columns,
    lowest 70.3 % jitter_x); not comparable to Inception FIDs" (no colon: the report cuts descriptions there)."""
    values = list(accuracy.values())
    mean = 100 * sum(values) / len(values)
    if len(values) == 1:
        shown = f"held-out accuracy {mean:.1f} % ({next(iter(accuracy))})"
    else:
        worst = min(accuracy, key=lambda k: accuracy[k])
        shown = f"held-out accuracy {mean:.1f} % (mean of {len(values)} label columns, lowest {100 * accuracy[worst]:.1f} % {worst})"
    return f"classifier CNN trained here on {info['train_images']} {info['dataset']} images, {shown}; not comparable to Inception FIDs"


@vqbench.hookimpl
def vqbench_register_feature_extractors(registry):
    registry.register("classifier", TrainedClassifier)
