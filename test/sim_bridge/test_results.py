import json

import pytest

from sim_bridge.results import (
    ResultsError,
    ResultsFile,
    collect,
    latest_by_key,
    read_records,
    shard_file_name,
)


def rec(eid, status="ok", scene="s", **kw):
    return {"scene_id": scene, "episode_id": str(eid), "status": status, **kw}


def test_append_and_reopen(tmp_path):
    path = tmp_path / "results" / shard_file_name(0, 1)
    assert path.name == "shard-000-of-001.jsonl"
    with ResultsFile(path) as rf:
        rf.append(rec(1, v=1))
        rf.append(rec(2, v=2))
        assert ("s", "1") in rf
    text = path.read_text()
    assert text.endswith("\n") and text.count("\n") == 2
    with ResultsFile(path) as rf:
        assert set(rf.records) == {("s", "1"), ("s", "2")}
        with pytest.raises(ResultsError, match="already has a result"):
            rf.append(rec(1))
        rf.append(rec(3))
    assert [r["episode_id"] for r in read_records(path)] == ["1", "2", "3"]


@pytest.mark.parametrize("tail", [
    b'{"scene_id": "s", "episode_id": "9", "sta',
    b'{"scene_id": "s", "episode_id": "9", "status": "ok"}',
    b"\x00\x00garbage",
])
def test_truncated_last_line_is_repaired(tmp_path, tail):
    path = tmp_path / "r.jsonl"
    good = (json.dumps(rec(1)) + "\n" + json.dumps(rec(2)) + "\n").encode()
    path.write_bytes(good + tail)
    assert [r["episode_id"] for r in read_records(path)] == ["1", "2"]  # readers ignore it
    assert path.read_bytes() == good + tail                             # ... and do not touch it
    with ResultsFile(path) as rf:                                         # the owner repairs it
        assert set(rf.records) == {("s", "1"), ("s", "2")}
        rf.append(rec(9))
    assert [r["episode_id"] for r in read_records(path)] == ["1", "2", "9"]
    assert path.read_bytes().startswith(good)


def test_corruption_before_last_line_raises(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(rec(1)) + "\n{broken\n" + json.dumps(rec(2)) + "\n")
    with pytest.raises(ResultsError, match=r"r\.jsonl: line 2"):
        read_records(path)
    with pytest.raises(ResultsError):
        ResultsFile(path)


def test_error_then_ok_and_merge_rules(tmp_path):
    d = tmp_path / "run" / "results"
    with ResultsFile(d / shard_file_name(0, 2)) as a:
        a.append(rec(1, "error", error="x"))
        a.append(rec(1, "ok", v=1))  # a retried error may be replaced
        with pytest.raises(ResultsError):
            a.append(rec(1, "ok"))
        a.append(rec(2, "ok"))
    with ResultsFile(d / shard_file_name(1, 2)) as b:
        b.append(rec(2, "error"))  # an error elsewhere never beats an ok
        b.append(rec(3, "ok"))
    merged = collect(tmp_path / "run")
    assert {k: v["status"] for k, v in merged.items()} == {
        ("s", "1"): "ok", ("s", "2"): "ok", ("s", "3"): "ok"}
    assert merged[("s", "1")]["v"] == 1
    assert latest_by_key([rec(1, "error", n=1), rec(1, "error", n=2)])[("s", "1")]["n"] == 2


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsFile(path):
        with pytest.raises(ResultsError, match="another process"):
            ResultsFile(path)
    with ResultsFile(path) as rf:  # free again once closed
        rf.append(rec(1))
