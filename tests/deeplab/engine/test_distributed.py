"""Distributed helpers: sharding, confusion-matrix all-reduce, DDP wrapping and timeouts on real Gloo processes."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from deeplab.engine.data import SeededSampler
from deeplab.engine.distributed import (
    ShardedSampler,
    all_reduce_confusion_matrix,
    get_rank,
    get_world_size,
    how_peer_was_lost,
    is_main_process,
    mean_over_ranks,
    setup_distributed,
    shard_dataset,
    shard_indices,
    wrap_model,
)
from deeplab.evaluation import ConfusionMatrix
from deeplab.models import build_model

# Worker prologue: a fixed data set (some pixels void) and this rank's process group from the environment.
PROLOGUE = """
import sys, torch
from deeplab.engine.distributed import *
from deeplab.evaluation import ConfusionMatrix
gen = torch.Generator().manual_seed(0)
preds, targets = torch.randint(0, 4, (9, 5, 6), generator=gen), torch.randint(0, 4, (9, 5, 6), generator=gen)
targets[:, 0, :] = 255
device = setup_distributed(torch.device("cpu"), timeout_s=float(sys.argv[1]))
"""

ALL_REDUCE = PROLOGUE + """
matrix = ConfusionMatrix(4)
for i in shard_dataset(list(range(9))):
    matrix.update(preds[i], targets[i])
all_reduce_confusion_matrix(matrix)
torch.save(matrix.matrix, sys.argv[2] + f"/matrix{get_rank()}.pt")
loss = mean_over_ranks(torch.tensor(float("nan") if get_rank() else 3.0))
assert loss.isnan(), "a non-finite loss on one rank must reach every rank"
assert mean_over_ranks(torch.tensor(1.0 + 2 * get_rank())).item() == 2.0

torch.manual_seed(0)  # same initial weights on both ranks, as with a seeded run
core = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
model = wrap_model(core, device)
assert unwrap_model(model) is core and type(model).__name__ == "DistributedDataParallel"
assert isinstance(core[1], torch.nn.BatchNorm2d)  # SyncBatchNorm has no CPU kernel: left as is on CPU
opt = torch.optim.SGD(core.parameters(), lr=0.1)
torch.manual_seed(get_rank())  # different data per rank: only the gradient all-reduce keeps weights equal
model(torch.randn(2, 3, 8, 8)).square().mean().backward()
opt.step()
torch.save(core.state_dict(), sys.argv[2] + f"/weights{get_rank()}.pt")
del model  # as in training, the DDP wrapper is gone before the group (else Gloo threads may abort at exit)
teardown_distributed()
"""

RANK_DIES = PROLOGUE + """
if get_rank() == 1:
    raise SystemExit(3)
try:
    torch.distributed.all_reduce(torch.ones(1))
except Exception as exc:
    print("collective failed:", type(exc).__name__)
    teardown_distributed()
    raise SystemExit(4)
"""

ALONE = """
import sys, torch
from deeplab.engine.distributed import setup_distributed
from deeplab.errors import UserError
try:
    setup_distributed(torch.device("cpu"), timeout_s=float(sys.argv[1]))
except UserError as exc:
    print("error:", exc)
    raise SystemExit(2)
print("process group formed")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(script: str, *args: str, repo_root: Path, ranks: tuple[int, ...] = (0, 1), world_size: int = 2,
            timeout: float = 60) -> list[subprocess.CompletedProcess]:
    """Run ``script`` as ranks ``ranks`` of a ``world_size`` Gloo group on a free local port, as torchrun would."""
    port = _free_port()
    procs = []
    for rank in ranks:
        env = {**os.environ, "WORLD_SIZE": str(world_size), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(repo_root)}
        procs.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], cwd=repo_root, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out))
    return results


@pytest.mark.parametrize("num_samples", [0, 1, 7, 8, 41])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shards_cover_every_index_exactly_once(num_samples: int, world_size: int) -> None:
    shards = [shard_indices(num_samples, rank=r, world_size=world_size) for r in range(world_size)]
    assert sorted(i for shard in shards for i in shard) == list(range(num_samples))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("world_size", [2, 4])
def test_sharded_sampler_splits_each_global_batch(world_size: int) -> None:
    batch, steps = 8, 5  # 40 draws from 10 samples: four epochs, each reshuffled
    single = _take(SeededSampler(10, seed=3), batch * steps)
    per_rank = batch // world_size
    shards = [_take(ShardedSampler(SeededSampler(10, seed=3), global_batch=batch, rank=r, world_size=world_size),
                    per_rank * steps) for r in range(world_size)]
    for step in range(steps):
        rebuilt = [item for shard in shards for item in shard[step * per_rank:(step + 1) * per_rank]]
        assert rebuilt == single[step * batch:(step + 1) * batch]
    assert {i for i, *_ in single[:10]} == set(range(10)) and single[:10] != single[10:20]  # reshuffled per epoch
    with pytest.raises(ValueError, match="not divisible"):
        ShardedSampler(SeededSampler(10, seed=3), global_batch=6, rank=0, world_size=4)


def _take(iterable, count: int) -> list:
    iterator = iter(iterable)
    return [next(iterator) for _ in range(count)]


def test_single_process_needs_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    device = torch.device("cpu")
    assert setup_distributed(device) == device
    assert (get_rank(), get_world_size(), is_main_process()) == (0, 1, True)
    model, data, matrix = nn.Linear(2, 2), [1, 2, 3], ConfusionMatrix(3)
    matrix.update(torch.tensor([0, 1]), torch.tensor([0, 2]))
    before = matrix.matrix.clone()
    assert wrap_model(model, device) is model and shard_dataset(data) is data
    assert torch.equal(all_reduce_confusion_matrix(matrix).matrix, before)
    loss = torch.tensor(1.5)
    assert mean_over_ranks(loss) is loss


@pytest.mark.slow
def test_two_gloo_processes_sum_confusion_and_share_gradients(tmp_path, repo_root) -> None:
    results = _launch(ALL_REDUCE, "30", str(tmp_path), repo_root=repo_root)
    assert [r.returncode for r in results] == [0, 0], [r.stdout[-2000:] for r in results]
    gen = torch.Generator().manual_seed(0)
    preds, targets = torch.randint(0, 4, (9, 5, 6), generator=gen), torch.randint(0, 4, (9, 5, 6), generator=gen)
    targets[:, 0, :] = 255
    single = ConfusionMatrix(4)
    single.update(preds, targets)
    for rank in (0, 1):
        assert torch.equal(torch.load(tmp_path / f"matrix{rank}.pt", weights_only=True), single.matrix)
    w0, w1 = (torch.load(tmp_path / f"weights{r}.pt", weights_only=True) for r in (0, 1))
    assert list(w0) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                        "1.num_batches_tracked"]  # unwrapped: no "module." prefix
    assert torch.allclose(w0["0.weight"], w1["0.weight"]) and torch.allclose(w0["1.bias"], w1["1.bias"])


@pytest.mark.slow
def test_dead_rank_gives_an_error_not_a_hang(repo_root) -> None:
    started = time.monotonic()
    rank0, rank1 = _launch(RANK_DIES, "20", repo_root=repo_root)
    assert rank1.returncode == 3
    assert rank0.returncode == 4 and "collective failed" in rank0.stdout, rank0.stdout[-2000:]
    assert time.monotonic() - started < 40


@pytest.mark.slow
def test_rendezvous_that_cannot_form_times_out_with_a_user_error(repo_root) -> None:
    started = time.monotonic()
    (alone,) = _launch(ALONE, "3", repo_root=repo_root, ranks=(0,))  # rank 1 never comes
    assert alone.returncode == 2 and "group formed" not in alone.stdout, alone.stdout[-2000:]
    assert "error: rendezvous 127.0.0.1:" in alone.stdout and "rank 0 of 2" in alone.stdout
    assert time.monotonic() - started < 30


def test_sync_batchnorm_conversion_keeps_checkpoint_keys() -> None:
    model = build_model(backbone="mobilenetv2", num_classes=3, pretrained_backbone=False)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    assert not any(type(m) is nn.BatchNorm2d for m in synced.modules())
    plain = build_model(backbone="mobilenetv2", num_classes=3, pretrained_backbone=False)
    plain.load_state_dict(synced.state_dict(), strict=True)


@pytest.mark.parametrize(("message", "said"), [
    ("[gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 5000ms for recv operation to complete",
     "stayed silent past --dist-timeout 5 s"),
    ("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:40313", "died (its connection closed)"),
])
def test_a_lost_peer_is_called_silent_only_after_a_timeout(message: str, said: str) -> None:
    """A killed rank closes its connection at once: 'past the timeout' would be untrue then."""
    assert how_peer_was_lost(RuntimeError(message), 5.0) == said
