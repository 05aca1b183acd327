"""``vqbench speed`` (vqbench.speed.measure) on the CPU: the row it reports and how decoding is timed."""

from __future__ import annotations

import pytest
import torch
from vqbench_plugins.vqgan.plugin import VQGAN

from vqbench import speed
from vqbench.speed import measure

CPU = torch.device("cpu")
TINY_SUNDAE = {"backbone": {"dim": 32, "depth": [1, 1, 1], "heads": 2, "dim_head": 16}}


def test_measure_reports_sampling_of_the_requested_work():
    row = measure("sundae", TINY_SUNDAE, (4, 4), 16, 2, 3, {"steps": 3, "early_stop": False}, "fp32", CPU, min_seconds=0.0)
    assert row["prior"] == "sundae" and row["batch"] == 2 and row["compiled"] is False
    assert row["nfe"] == 3.0  # every sample runs every step: early stop off
    assert row["sample_s_per_img"] > 0 and row["backbone_tokens_per_s"] > 0
    assert "decode_s_per_img" not in row


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_decoding_is_timed_per_image_at_the_sampling_batch_and_precision(monkeypatch, precision):
    seen = []
    original = VQGAN.decode

    def recording_decode(self, codes):
        seen.append((codes.shape[0], next(self.parameters()).dtype, torch.is_autocast_enabled("cpu")))
        return original(self, codes)

    monkeypatch.setattr(VQGAN, "decode", recording_decode)
    real_timed = speed._timed

    def six_seconds_a_call(fn, *args, **kwargs):
        real_timed(fn, *args, **kwargs)
        return 6.0, 1

    monkeypatch.setattr(speed, "_timed", six_seconds_a_call)
    batch = 3
    row = measure("independent", {}, (8, 8), 128, batch, batch, {}, precision, CPU, decode_preset="tiny", min_seconds=0.0)
    bf16 = precision == "bf16"
    assert seen and all(item == (batch, torch.bfloat16 if bf16 else torch.float32, bf16) for item in seen)
    assert row["decode_s_per_img"] == pytest.approx(6.0 / batch)  # one timed call decodes the whole batch
    assert row["total_s_per_img"] == pytest.approx(row["sample_s_per_img"] + 6.0 / batch)
