"""Streaming encode: same codes as the in-memory path, bounded memory, resumable writes; rank shards of training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vqbench_plugins.toyfaces import ToyFaces, ToyFacesConfig
from vqbench_plugins.vqgan.train import StepBatches, rank_shard, step_picks

import vqbench.distributed as distributed
from vqbench import latents
from vqbench.interfaces import ImageSource, Tokenizer
from vqbench.metrics.features import extract_features, extract_features_split
from vqbench.runner import data as data_mod
from vqbench.runner.data import DataBundle, encode_images, encode_latents
from vqbench.streaming import ImageBatch, loader


class Faces(ToyFaces):
    """Toy faces where some indices are unreadable, counting how many images were read."""

    def __init__(self, count: int = 40, broken: tuple[int, ...] = (3, 17)):
        super().__init__(ToyFacesConfig(count=count), 16)
        self.broken, self.reads = set(broken), 0

    def image(self, index: int) -> np.ndarray:
        self.reads += 1
        if index in self.broken:
            raise OSError(f"image {index} is damaged")
        return super().image(index)


class MeanTokenizer(Tokenizer):
    """Codes = quantised 4×4 block means of the red channel (deterministic, no weights); counts encode calls."""

    codebook_size, downsample_factor = 16, 4

    def __init__(self) -> None:
        super().__init__()
        self.calls, self.largest = 0, 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.largest = max(self.largest, len(images))
        means = torch.nn.functional.avg_pool2d(images[:, :1], 4)[:, 0]
        return ((means + 1) / 2 * 15.999).long().clamp(0, 15)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes.float() / 7.5 - 1)[:, None].repeat_interleave(4, 2).repeat_interleave(4, 3).expand(-1, 3, -1, -1)

    def config_dict(self) -> dict:
        return {}

    @classmethod
    def load(cls, path, **options) -> Tokenizer:
        return cls()


class Projection(torch.nn.Module):
    """A fixed random projection of uint8 images (a stand-in feature extractor)."""

    dims = 5

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(768, 5, generator=torch.Generator().manual_seed(0)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().flatten(1) @ self.weight


def in_memory_codes(tokenizer: Tokenizer, source: ImageSource, indices: np.ndarray, batch_size: int) -> tuple[np.ndarray, list[int]]:
    """The former path: ``source.batch`` per batch in the main process."""
    codes, kept = [], []
    for start in range(0, len(indices), batch_size):
        images, ok = source.batch(indices[start : start + batch_size])
        if ok:
            codes.append(tokenizer.encode(images))
            kept += ok
    return torch.cat(codes).numpy(), kept


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_encode_gives_the_in_memory_codes_and_skips_unreadable(tmp_path, workers):
    source, indices = Faces(), np.arange(40)[::-1].copy()
    expected, kept = in_memory_codes(MeanTokenizer(), Faces(), indices, 6)
    codes, got_kept = encode_images(MeanTokenizer(), source, indices, torch.device("cpu"), 6, workers=workers)
    assert np.array_equal(codes, expected) and got_kept.tolist() == kept
    assert source.skipped == {3, 17}
    path = encode_latents(tmp_path / "lat", MeanTokenizer(), source, indices, torch.device("cpu"), 6, workers=workers,
                          labels=source.labels(), meta={"split": {"name": "all"}})  # fmt: skip
    data = latents.open(path)
    assert np.array_equal(np.asarray(data.codes), expected) and data.meta["skipped_unreadable"] == [3, 17]
    assert np.load(path / "source_index.npy").tolist() == kept
    assert data.labels is not None and np.array_equal(data.labels, source.labels()[kept])
    assert not (path / latents.PROGRESS_FILE).exists() and data.meta["split"] == {"name": "all"}


def test_encoder_holds_a_bounded_number_of_batches(tmp_path):
    """The loader reads ahead at most workers × prefetch batches; the tokenizer never sees more than one batch."""
    source, tokenizer = Faces(count=200, broken=()), MeanTokenizer()
    reads_at_first_encode = []
    encode = tokenizer.encode

    def watching(images: torch.Tensor) -> torch.Tensor:
        reads_at_first_encode.append(source.reads)
        return encode(images)

    tokenizer.encode = watching  # type: ignore[method-assign]
    encode_latents(tmp_path / "lat", tokenizer, source, np.arange(200), torch.device("cpu"), 8, workers=0)
    assert tokenizer.largest == 8 and tokenizer.calls == 25
    # read in the main process (workers=0): exactly one batch has been read when each batch is encoded
    assert reads_at_first_encode == [8 * (k + 1) for k in range(25)]


def interrupted(path, source: ImageSource, indices: np.ndarray, after: int = 3) -> None:
    """Run an encode that is interrupted while encoding batch ``after`` (0-based)."""
    tokenizer = MeanTokenizer()
    real_encode = tokenizer.encode

    def failing(images: torch.Tensor) -> torch.Tensor:
        if tokenizer.calls == after:
            raise KeyboardInterrupt
        return real_encode(images)

    tokenizer.encode = failing  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        encode_latents(path, tokenizer, source, indices, torch.device("cpu"), 6, workers=0)


def test_interrupted_encode_resumes_after_the_last_complete_batch(tmp_path):
    source, indices = Faces(), np.arange(40)
    whole = latents.open(encode_latents(tmp_path / "whole", MeanTokenizer(), Faces(), indices, torch.device("cpu"), 6, workers=0))
    interrupted(tmp_path / "lat", source, indices)
    assert not (tmp_path / "lat" / "meta.json").exists()  # unfinished
    with pytest.raises(Exception, match="meta.json"):
        latents.open(tmp_path / "lat")
    resumed = MeanTokenizer()
    encode_latents(tmp_path / "lat", resumed, source, indices, torch.device("cpu"), 6, workers=0)
    assert resumed.calls == 7 - 3  # the three finished batches are not encoded again
    done = latents.open(tmp_path / "lat")
    assert np.array_equal(np.asarray(done.codes), np.asarray(whole.codes)) and done.meta == whole.meta | {"skipped_unreadable": [3, 17]}
    # progress of another job (same size, other order) in the folder is discarded, not mixed in
    interrupted(tmp_path / "lat2", source, indices)
    other, backwards = MeanTokenizer(), indices[::-1].copy()
    encode_latents(tmp_path / "lat2", other, source, backwards, torch.device("cpu"), 6, workers=0)
    assert other.calls == 7
    assert np.array_equal(np.asarray(latents.open(tmp_path / "lat2").codes), in_memory_codes(MeanTokenizer(), source, backwards, 6)[0])


def test_reference_batches_stream_the_real_images_and_split_features_match(tmp_path, monkeypatch):
    source = Faces(broken=())
    test_index = np.arange(5, 35)
    codes = MeanTokenizer().encode(source.batch(test_index)[0]).numpy()
    test = latents.open(latents.write(tmp_path / "test", codes, 16))
    bundle = DataBundle(test, test, MeanTokenizer(), source, test_index, workers=1)
    pairs = list(bundle.reference_batches(25, 7, lambda c: c))
    assert [len(images) for images, _ in pairs] == [7, 7, 7, 4] == [len(c) for _, c in pairs]
    expected = (source.batch(test_index[:25])[0].add(1).mul(127.5).round()).to(torch.uint8)
    assert torch.equal(torch.cat([images for images, _ in pairs]), expected)
    assert bundle.reference_batch_count(25, 7) == 4
    only = list(bundle.reference_batches(25, 7, lambda c: c, batches=[3, 1]))
    assert torch.equal(only[0][1], pairs[3][1]) and torch.equal(only[1][0], pairs[1][0])

    extractor = Projection()
    batches = lambda numbers: (images.float() for images, _ in bundle.reference_batches(25, 7, lambda c: c, batches=numbers))  # noqa: E731
    with pytest.raises(TypeError, match="uint8"):
        extract_features_split(extractor, batches, 4, torch.device("cpu"))
    uint8 = lambda numbers: (images for images, _ in bundle.reference_batches(25, 7, lambda c: c, batches=numbers))  # noqa: E731
    single = extract_features(extractor, uint8(range(4)), torch.device("cpu"))
    assert torch.equal(extract_features_split(extractor, uint8, 4, torch.device("cpu")), single)
    # as rank 1 of 2: it extracts batches 1 and 3 only (rank 0 gathers them)
    sent = []
    monkeypatch.setattr("vqbench.metrics.features.world", lambda: distributed.World(1, 2))
    monkeypatch.setattr("vqbench.metrics.features.gather_batches", lambda mine: sent.extend(mine))
    assert extract_features_split(extractor, uint8, 4, torch.device("cpu")) is None
    assert [b for b, _ in sent] == [1, 3] and torch.equal(torch.cat([f for _, f in sent]), torch.cat([single[7:14], single[21:25]]))


def test_encode_splits_batches_across_ranks(monkeypatch):
    """Rank r encodes batches r, r+N, …; what every rank sends, in batch order, is the single-process result."""
    source, indices = Faces(), np.arange(40)
    expected, kept = in_memory_codes(MeanTokenizer(), Faces(), indices, 6)
    sent: dict[int, list] = {}
    for rank in range(3):
        monkeypatch.setattr("vqbench.streaming.world", lambda rank=rank: distributed.World(rank, 3))
        monkeypatch.setattr("vqbench.streaming.gather_batches", lambda mine, rank=rank: sent.setdefault(rank, []).extend(mine))
        monkeypatch.setattr(data_mod, "world", lambda rank=rank: distributed.World(rank, 3))
        assert list(data_mod.encode_batches(MeanTokenizer(), source, indices, torch.device("cpu"), 6, workers=0)) == []
    assert [[b for b, _ in sent[r]] for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    ordered = sorted((item for part in sent.values() for _, item in part), key=lambda item: item[0])
    assert np.array_equal(torch.cat([c for _, (c, _, _) in ordered if c is not None]).numpy(), expected)
    assert sum((k for _, (_, k, _) in ordered), []) == kept


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_rank_shards_partition_each_steps_global_batch(size):
    indices = np.arange(100, 160)
    for step in (0, 7):
        picks, _ = step_picks(indices, 8, seed=3, step=step)
        shards = [picks[rank_shard(8, rank, size)] for rank in range(size)]
        assert np.array_equal(np.concatenate(shards), picks) and all(len(s) == 8 // size for s in shards)


def test_training_stream_yields_each_steps_shard_in_order(monkeypatch):
    indices = np.arange(50)
    monkeypatch.setattr("vqbench_plugins.vqgan.train.world", lambda: distributed.World(1, 2))
    steps = list(StepBatches(indices, 8, seed=0, start=2, steps=5))
    assert steps == [step_picks(indices, 8, 0, s)[0][4:8].tolist() for s in (2, 3, 4)]
    source = Faces(count=50, broken=())
    got = [b.kept for b in loader(source, steps, workers=1)]
    assert got == steps


def test_training_rejects_a_global_batch_not_divisible_by_the_ranks(monkeypatch, tmp_path):
    from vqbench_plugins.vqgan.plugin import VQGAN

    from vqbench.errors import ConfigError

    monkeypatch.setattr("vqbench_plugins.vqgan.train.world", lambda: distributed.World(0, 3))
    model = VQGAN.from_preset("tiny", {"n_embed": 8, "ddconfig": {"resolution": 16, "ch": 8}})
    with pytest.raises(ConfigError, match="tokenizer.train.batch_size"):
        VQGAN.fit(model, Faces(), np.arange(10), VQGAN.TrainConfig(batch_size=8, steps=1), checkpoint=tmp_path / "s.pt", seed=0)


def test_image_batches_travel_to_the_device_as_uint8_and_convert_there():
    """A quarter of the bytes cross to the device (from pinned memory without blocking on CUDA); the values are
    those of the host conversion."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CrossDeviceCopies(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.dtypes: list[torch.dtype] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.ops.aten._to_copy.default and kwargs.get("device") not in (None, args[0].device):
                self.dtypes.append(args[0].dtype)
            return func(*args, **kwargs)

    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    batch = ImageBatch(images, [0, 1], [])
    with CrossDeviceCopies() as copies:
        on_meta = batch.floats("meta")
    assert copies.dtypes == [torch.uint8] and on_meta.device.type == "meta" and on_meta.dtype == torch.float32
    assert torch.equal(batch.floats(torch.device("cpu")), batch.floats()) and batch.floats().min() >= -1.0
