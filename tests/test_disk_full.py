"""A full disk stops a run with one line and exit code 2, and a rerun after freeing space finishes it.

Writes go through ``io.atomic_path`` (a temporary renamed into place), which turns a write that failed for lack of
space (ENOSPC/EDQUOT, numpy's errno-less short write, torch's zip writer failure) into ``DiskFull`` naming the target;
the temporary is removed and a file already at the target is untouched. ``LatentWriter`` reserves its memory-mapped
files' blocks when it creates them, so a full disk raises there instead of killing the process with SIGBUS later.
The last test repeats the checks on a real 64 KiB tmpfs where a user mount namespace is available.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from vqbench import latents
from vqbench.cli import main
from vqbench.errors import DiskFull, VQBenchError
from vqbench.io import is_disk_full, load_torch, read_json, save_torch, write_bytes, write_json, write_text

TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
TORCH_FULL_2 = "[enforce fail at inline_container.cc:588] . PytorchStreamWriter failed writing file data/0: file write failed"
NUMPY_FULL = "1000000 requested and 131056 written"  # ndarray.tofile (np.save) on a full disk: no errno


def enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- unit: the conversion --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "err, full",
    [
        (enospc(), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (OSError(NUMPY_FULL), True),
        (RuntimeError(TORCH_FULL), True),
        (RuntimeError(TORCH_FULL_2), True),
        (OSError(errno.EACCES, "Permission denied"), False),
        (OSError("a message without errno"), False),
        (RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory"), False),
        (RuntimeError("CUDA out of memory"), False),
        (ValueError("No space left on device"), False),
    ],
)
def test_which_errors_mean_a_full_disk(err, full):
    assert is_disk_full(err) is full


def test_disk_full_is_a_user_error_with_exit_code_2_naming_the_path(tmp_path):
    err = DiskFull(tmp_path / "x.pt")
    assert isinstance(err, VQBenchError) and err.exit_code == 2
    assert str(err).startswith(f"no space left on {tmp_path / 'x.pt'} ")
    assert "free space" in str(err) and "rerun" in str(err) and "\n" not in str(err)


@pytest.mark.parametrize("message", [TORCH_FULL, TORCH_FULL_2])
def test_torch_save_on_a_full_disk_raises_disk_full_and_keeps_the_old_file(tmp_path, monkeypatch, message):
    target = tmp_path / "prior.pt"
    save_torch(target, {"w": torch.ones(3)})
    before = target.read_bytes()

    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 partial")  # torch leaves a partial zip before it fails
        raise RuntimeError(message)

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFull) as caught:
        save_torch(target, {"w": torch.zeros(3)})
    assert caught.value.path == str(target)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert target.read_bytes() == before and leftovers(tmp_path) == []
    monkeypatch.undo()
    assert torch.equal(load_torch(target)["w"], torch.ones(3))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_text_write_on_a_full_disk_raises_disk_full(tmp_path, monkeypatch, code):
    target = tmp_path / "metrics.json"
    write_json(target, {"old": 1})
    original = Path.write_text

    def full(self, text, *args, **kwargs):
        original(self, text[:5])  # part of it reached the disk
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DiskFull, match=rf"^no space left on {re.escape(str(target))} "):
        write_json(target, {"new": 2})
    with pytest.raises(DiskFull):
        write_text(tmp_path / "fresh.txt", "text")
    monkeypatch.undo()
    assert read_json(target) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_creating_the_temporary_on_a_full_disk_raises_disk_full(tmp_path, monkeypatch):
    import vqbench.io as io

    def full(*args, **kwargs):
        raise enospc()

    monkeypatch.setattr(io.tempfile, "mkdtemp", full)
    with pytest.raises(DiskFull, match="no space left on"):
        write_bytes(tmp_path / "plot.png", b"png")


def test_the_writability_probe_of_out_and_cache_reports_a_full_disk(tmp_path, monkeypatch):
    import vqbench.io as io

    def full(*args, **kwargs):
        raise enospc()

    monkeypatch.setattr(io.tempfile, "mkstemp", full)
    with pytest.raises(DiskFull) as caught:
        io.check_writable_folder(tmp_path / "out", "out (--out)")
    assert caught.value.path == str(tmp_path)  # the folder that exists (out is created later)


def test_other_errors_pass_through_unchanged(tmp_path, monkeypatch):
    target = tmp_path / "prior.pt"
    unrelated = RuntimeError("Expected all tensors to be on the same device")
    denied = OSError(errno.EACCES, "Permission denied")
    for err in (unrelated, denied):

        def fail(obj, f, *args, err=err, **kwargs):
            raise err

        monkeypatch.setattr(torch, "save", fail)
        with pytest.raises(type(err)) as caught:
            save_torch(target, {"w": torch.ones(1)})
        assert caught.value is err  # the very exception, not a DiskFull nor a copy
        assert list(tmp_path.iterdir()) == []


def test_a_nested_atomic_write_names_the_outer_target_not_its_temporary(tmp_path, monkeypatch):
    """``latents.write`` writes a folder atomically; numpy's short write inside it names the dataset folder."""
    target = tmp_path / "train"
    latents.write(target, np.zeros((2, 2, 2), np.int64), 4)
    meta = (target / "meta.json").read_text()

    def full(file, arr, *args, **kwargs):
        raise OSError(NUMPY_FULL)

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(DiskFull) as caught:
        latents.write(target, np.ones((2, 2, 2), np.int64), 4)
    assert caught.value.path == str(target)
    assert (target / "meta.json").read_text() == meta and leftovers(tmp_path) == []


# -- LatentWriter: blocks reserved when its memory-mapped files are created --------------------------------------------


def test_latent_writer_reserves_the_blocks_of_its_memory_maps(tmp_path, monkeypatch):
    calls = []
    original = os.posix_fallocate

    def spy(fd, offset, length):
        calls.append((os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), offset, length))
        return original(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", spy)
    writer = latents.LatentWriter(tmp_path / "lat", 10, 16, job="j")
    writer.append(0, np.ones((4, 2, 3), np.int64), list(range(4)))
    sizes = {name: (tmp_path / "lat" / name).stat().st_size for name in ("codes.npy", "source_index.npy")}
    assert sorted(calls) == sorted((name, 0, size) for name, size in sizes.items())
    writer.finish()  # the trim copies into a new memory map: reserved too
    assert ("item", 0, (tmp_path / "lat" / "codes.npy").stat().st_size) in calls
    assert len(latents.open(tmp_path / "lat")) == 4


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate")
def test_latent_writer_on_a_full_disk_stops_at_creation_and_resumes(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise enospc()

    monkeypatch.setattr(os, "posix_fallocate", full)
    writer = latents.LatentWriter(tmp_path / "lat", 10, 16, job="j")
    with pytest.raises(DiskFull) as caught:
        writer.append(0, np.ones((4, 2, 3), np.int64), list(range(4)))
    assert caught.value.path == str(tmp_path / "lat")
    assert sorted(p.name for p in (tmp_path / "lat").iterdir()) == []  # the reserved space is given back
    monkeypatch.undo()
    writer = latents.LatentWriter(tmp_path / "lat", 10, 16, job="j")  # the rerun
    writer.append(0, np.ones((4, 2, 3), np.int64), list(range(4)))
    writer.finish()
    assert latents.open(tmp_path / "lat").tensor().eq(1).all()


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EINVAL])
def test_latent_writer_without_fallocate_support_writes_as_before(tmp_path, monkeypatch, code):
    def unsupported(fd, offset, length):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    writer = latents.LatentWriter(tmp_path / "lat", 10, 16, job="j")
    writer.append(0, np.full((3, 2, 2), 5), [0, 1, 2])
    writer.finish()
    assert latents.open(tmp_path / "lat").tensor().eq(5).all()


# -- end to end through the CLI --------------------------------------------------------------------------------------


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("vqbench:")]


def test_a_run_that_fills_the_disk_exits_2_with_one_line_and_a_rerun_finishes(smoke_config, tmp_path, monkeypatch, capsys):
    smoke_config["metrics"]["enabled"] = ["nll", "fid"]  # one latent and one image metric keep the three runs short
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(smoke_config))
    out, cache = Path(smoke_config["out"]), Path(smoke_config["cache"])

    # 1. the disk fills while the latents are encoded (LatentWriter reserving its memory maps)
    def full(fd, offset, length):
        raise enospc()

    monkeypatch.setattr(os, "posix_fallocate", full)
    assert main(["run", str(path)]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith(f"vqbench: error: no space left on {cache / 'latents'}")
    monkeypatch.undo()

    # 2. the disk fills when the cell's prior.pt is saved (torch's zip writer fails; the tokenizer is cached by now)
    original = torch.save

    def full_at_prior(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and Path(f).parent.name.startswith(".prior.pt."):
            raise RuntimeError(TORCH_FULL)
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_prior)
    assert main(["run", str(path)]) == 2
    cell = out / "runs" / "independent__seed0"
    [line] = error_lines(capsys.readouterr().err)
    assert line == f"vqbench: error: {DiskFull(cell / 'prior.pt')}"
    assert not (cell / "prior.pt").exists() and not (cell / "metrics.json").exists()
    assert [name for name in leftovers(cell) if name.startswith(".prior.pt.")] == []
    monkeypatch.undo()

    # 3. space freed: the rerun finishes with the complete report
    assert main(["run", str(path)]) == 0
    assert error_lines(capsys.readouterr().err) == []
    assert (cell / "prior.pt").is_file() and (cell / "metrics.json").is_file()
    table = pd.read_csv(out / "report.csv", index_col="prior")
    assert list(table.index) == ["independent"] and table.loc["independent"].notna().any()
    assert "No finished cells yet" not in (out / "report.md").read_text()


# -- a real full file system (a 64 KiB tmpfs in a user mount namespace) ----------------------------------------------

REAL = textwrap.dedent(
    """
    import os, sys
    import numpy as np, torch
    from pathlib import Path
    from vqbench import latents
    from vqbench.errors import DiskFull
    from vqbench.io import load_torch, save_torch, write_json

    root = Path(sys.argv[1])
    def disk_full(call, target):
        try:
            call()
        except DiskFull as err:
            assert err.path == str(target), (err.path, target)
            return
        raise AssertionError(f"no DiskFull for {target}")

    save_torch(root / "prior.pt", {"w": torch.ones(4)})
    disk_full(lambda: save_torch(root / "prior.pt", {"w": torch.ones(1 << 16)}), root / "prior.pt")
    assert torch.equal(load_torch(root / "prior.pt")["w"], torch.ones(4))
    disk_full(lambda: write_json(root / "m.json", {"x": "y" * (1 << 17)}), root / "m.json")
    disk_full(lambda: latents.write(root / "lat", np.zeros((64, 32, 32), np.int64), 70000), root / "lat")
    writer = latents.LatentWriter(root / "enc", 1 << 14, 16, job="j")
    disk_full(lambda: writer.append(0, np.ones((2, 16, 16), np.int64), [0, 1]), root / "enc")
    assert sorted(p.name for p in root.iterdir()) == ["enc", "prior.pt"], sorted(root.iterdir())
    assert list((root / "enc").iterdir()) == []
    print("REAL-OK")
    """
)


def test_on_a_real_full_tmpfs(tmp_path):
    unshare = shutil.which("unshare")
    mount = tmp_path / "small"
    mount.mkdir()
    setup = f"mount -t tmpfs -o size=64k tmpfs {mount}"
    if unshare is None or subprocess.run([unshare, "-r", "-m", "sh", "-c", setup], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (no unprivileged user mount namespace)")
    script = tmp_path / "real.py"
    script.write_text(REAL)
    command = f'{setup} && exec "$0" "$1" "$2"'
    done = subprocess.run([unshare, "-r", "-m", "sh", "-c", command, sys.executable, str(script), str(mount)], capture_output=True, text=True)
    assert done.returncode == 0 and "REAL-OK" in done.stdout, done.stdout + done.stderr
