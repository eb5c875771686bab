import pytest

from training.distributed import DistInfo, DistributedError, get_dist_info, shard


def test_single_process_default():
    info = get_dist_info({})
    assert info == DistInfo() and info.is_main and not info.is_distributed


def test_torchrun_vars():
    info = get_dist_info({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4",
                          "LOCAL_WORLD_SIZE": "2"})
    assert (info.rank, info.local_rank, info.world_size) == (3, 1, 4)
    assert not info.is_main and info.is_distributed
    assert shard(list(range(10)), info) == [3, 7]


@pytest.mark.parametrize("env, name", [({"RANK": "x"}, "RANK"),
                                       ({"RANK": "4", "WORLD_SIZE": "4"}, "RANK=4"),
                                       ({"WORLD_SIZE": "0"}, "WORLD_SIZE")])
def test_bad_env(env, name):
    with pytest.raises(DistributedError, match=name):
        get_dist_info(env)


def test_shards_partition():
    items = list(range(11))
    parts = [shard(items, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(parts, [])) == items
