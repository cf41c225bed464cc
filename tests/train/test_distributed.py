"""Multi-process training (torch.distributed, gloo on CPU): N processes on a split global batch take the same step as
one."""

import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file
from tests.conftest import cir_catalog, cir_config
from tests.support.http import free_port
from tests.train.test_locked import setup  # noqa: F401  (the tiny locked-tower run: catalog, tower file, config)

from vitrine.losses import ClipLoss, sharded_contrastive_loss
from vitrine.train.distributed import Distributed

# Gradients agree to float32 rounding (~1e-7: sums in another order). Adam divides by sqrt(v): on a weight whose
# gradient is near zero that rounding can move one update by up to ~lr, so after 8 steps at lr 0.01 a few weights
# differ by ~1e-5 while the mean difference stays ~1e-8 (measured: max 1.24e-5, mean 1.4e-8 on weights of ~0.2).
MAX_DIFF, MEAN_DIFF = 1e-4, 1e-6


def _batch():
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(8, 6, generator=g), torch.randn(8, 5, generator=g)
    ids = torch.tensor([0, 1, 2, 2, 3, 4, 5, 1])  # repeated captions: multi-positive rows
    return x, t, ids


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(6, 4), torch.nn.Linear(5, 4), torch.nn.Parameter(torch.tensor(2.0))


def _rank_gradients(rank, world, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    ctx = Distributed(rank, world)
    image_net, text_net, scale = _model()
    x, t, ids = _batch()
    mine = ctx.shard(len(x))
    image, text = F.normalize(image_net(x[mine]), dim=-1), F.normalize(text_net(t[mine]), dim=-1)
    loss = sharded_contrastive_loss(image, text, ctx.gather(image), ctx.gather(text), scale, ids[mine], ids, len(x))
    loss.backward()
    params = [*image_net.parameters(), *text_net.parameters(), scale]
    ctx.sum_gradients(params)
    # numpy arrays travel by value; tensors would travel through this process's shared-memory socket, which is gone
    # if it exits before the parent unpickles them (seen: FileNotFoundError in the parent's queue.get)
    queue.put((rank, ctx.sum_value(loss.item()), [p.grad.detach().numpy().copy() for p in params]))
    torch.distributed.destroy_process_group()


def test_split_batch_gradients_equal_the_whole_batch_gradients():
    image_net, text_net, scale = _model()
    x, t, ids = _batch()
    loss = ClipLoss()(F.normalize(image_net(x), dim=-1), F.normalize(text_net(t), dim=-1), scale, ids)
    loss.backward()
    expected = [p.grad for p in (*image_net.parameters(), *text_net.parameters(), scale)]
    context = mp.get_context("spawn")
    queue, port = context.Queue(), free_port()
    processes = [context.Process(target=_rank_gradients, args=(rank, 2, port, queue)) for rank in range(2)]
    for p in processes:
        p.start()
    results = [queue.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank, total_loss, grads in results:
        assert total_loss == pytest.approx(loss.item(), abs=1e-6)
        for got, want in zip(grads, expected):
            got = torch.from_numpy(got)
            assert torch.allclose(got, want, atol=1e-6), (rank, (got - want).abs().max())


def test_two_processes_train_the_same_weights_as_one_and_resume(setup, tmp_path):  # noqa: F811
    root, config = setup
    one = config.replace(out=str(tmp_path / "one"), epochs=2)
    two = config.replace(out=str(tmp_path / "two"), epochs=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(cfg, *extra):
        path = tmp_path / f"{os.path.basename(cfg.out)}.json"
        cfg.save(path)
        done = subprocess.run(
            [sys.executable, "-m", "vitrine", "train", "clip", "--config", str(path), "--no-progress", *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    run(one)
    run(two.replace(max_steps=3), "--nproc", "2")  # stopped part way: rank 0 checkpointed
    assert (tmp_path / "two" / "checkpoint.pt").is_file()
    finished = run(two, "--nproc", "2")  # resumed by both processes from rank 0's checkpoint
    assert finished.stdout.count('"model_dir"') == 1  # rank 0 alone reports (and writes)
    a = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    mean = sum(float((a[k] - b[k]).abs().sum()) for k in a) / sum(a[k].numel() for k in a)
    assert worst <= MAX_DIFF and mean <= MEAN_DIFF, (worst, mean)


def test_composed_retrieval_stage1_in_two_processes_matches_one(tmp_path):
    """`vitrine train cir --nproc 2`: queries split unevenly (batch 13), targets from the whole batch; same
    projection."""
    config = cir_config(cir_catalog(tmp_path), stage=1, epochs=1, batch_size=13)
    a, b = train_in_one_and_two_processes("cir", config, tmp_path, "combiner/text_projection.safetensors")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= MAX_DIFF, worst


def test_region_alignment_in_two_processes_matches_one(tmp_path):
    """`vitrine train regions --nproc 2` on cached view features: texts split unevenly, gathered; same heads as one
    process."""
    from tests.conftest import make_rows, write_folder

    from vitrine.train.regions import RegionTrainConfig

    write_folder(tmp_path / "cat", make_rows(48))
    config = RegionTrainConfig(
        data=str(tmp_path / "cat"), model="vitrine:small", split_from=None, epochs=2, batch_size=8, lr=1e-3,
        warmup_steps=1, val_items=8, cache_dir=str(tmp_path / "cache"), freeze_image_tower=True,
    )
    a, b = train_in_one_and_two_processes("regions", config, tmp_path, "model/model.safetensors")
    assert a.keys() == b.keys() and "image_proj.weight" in a
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    mean = sum(float((a[k] - b[k]).abs().sum()) for k in a) / sum(a[k].numel() for k in a)
    assert worst <= MAX_DIFF and mean <= MEAN_DIFF, (worst, mean)


def train_in_one_and_two_processes(recipe: str, config, tmp_path, saved: str) -> tuple[dict, dict]:
    """Train `config` with `vitrine train RECIPE` in one process and with --nproc 2; the two saved weight files."""
    import json

    (tmp_path / f"{recipe}.json").write_text(json.dumps(config.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, extra in (("one", []), ("two", ["--nproc", "2"])):
        done = subprocess.run(
            [
                sys.executable, "-m", "vitrine", "train", recipe, "--config", str(tmp_path / f"{recipe}.json"), "--out",
                str(tmp_path / name), "--no-progress", *extra,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    return load_file(str(tmp_path / "one" / saved)), load_file(str(tmp_path / "two" / saved))
