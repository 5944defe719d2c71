"""What the command line tells its user: readable job errors, help, log levels, ids."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from p2pmr import _worker
from p2pmr.encoding import MSGPACK, group_pairs
from p2pmr.errors import UnencodableRecord
from p2pmr.job import Job, dump_job, load_job_file

from .helpers import PeerProcess, run_cli

ADVICE = "yield only str, bytes, int, float, bool, None, list, tuple and dict"
INTERNAL = ("Traceback", "encoding.py", "_worker.py", "_packer", "Remote traceback")
LINES = "the cat sat\non the mat\nthe end\n"


def _job(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


def _run(tmp_path: Path, job: Path, *args: str) -> tuple[int, str, str]:
    """Run ``job`` on a few lines with one local peer: (status, stdout, stderr)."""
    data = tmp_path / "in.txt"
    data.write_text(LINES)
    result = run_cli("run", str(job), "--input", str(data), "--local-peers", "1",
                     "--repo", str(tmp_path / "repo"), "--no-progress", *args, check=False,
                     timeout=300)
    return result.returncode, result.stdout.decode(), result.stderr.decode(errors="replace")


def test_an_unencodable_value_is_one_line_naming_key_type_function_and_fix(
        tmp_path: Path) -> None:
    job = _job(tmp_path, "sets.py", "def map(key, line):\n"
                                    "    yield 'words', set(line.split())\n\n\n"
                                    "def reduce(key, values):\n"
                                    "    yield key, len(list(values))\n")
    code, _, err = _run(tmp_path, job)
    assert code == 1, err
    last = err.rstrip().splitlines()[-1]
    assert last.startswith("error: map task 0 failed"), err
    assert "map (sets.py, line 1) yielded a set as the value for key 'words'" in last
    assert ADVICE in last and "--encoding pickle" in last
    for frame in INTERNAL:
        assert frame not in err, f"{frame!r} in:\n{err}"


def test_at_debug_level_the_whole_traceback_is_shown(tmp_path: Path) -> None:
    """--log-level given after the subcommand reaches the local peers, whose
    log has the worker's whole traceback, p2pmr's frames included."""
    job = _job(tmp_path, "objects.py", "class Point:\n    pass\n\n\n"
                                       "def map_batch(records):\n"
                                       "    for _, line in records:\n"
                                       "        yield 'points', [len(line), Point()]\n\n\n"
                                       "def reduce(key, values):\n"
                                       "    yield key, 1\n")
    code, _, err = _run(tmp_path, job, "--log-level", "DEBUG")
    assert code == 1
    assert re.search(r" DEBUG +p2pmr\.", err)
    assert "map_batch (objects.py, line 5) yielded a list holding a Point as the value for " \
           "key 'points'" in err
    assert "Traceback (most recent call last)" in err and 'encoding.py", line' in err


class _Thing:
    pass


def _combine_to_set(key: str, values: object) -> object:
    yield key, {1}


def _combine_to_bad_key(key: str, values: object) -> object:
    yield frozenset([key]), 1


@pytest.mark.parametrize(("pairs", "combine", "expected"), [
    ([(frozenset("a"), 1)], None, "map yielded the key frozenset({'a'}), a frozenset,"),
    ([(("x", {1}), 1)], None, "map yielded the key ('x', {1}), a tuple holding a set,"),
    ([("k", Counter("ab"))], None, "map yielded a Counter as the value for key 'k',"),
    ([("k", {"a": [_Thing()]})], None, "map yielded a dict holding a _Thing as the value"),
    ([("k", 1), ("k", 2)], _combine_to_set, "combine yielded a set as the value for key 'k',"),
    ([("k", 1), ("k", 2)], _combine_to_bad_key, "combine yielded the key frozenset({'k'}),"),
], ids=["key", "in-key", "value", "in-value", "combine-value", "combine-key"])
def test_each_unencodable_record_names_its_function_key_and_type(
        pairs: list[tuple[object, object]], combine: object, expected: str) -> None:
    with pytest.raises(UnencodableRecord) as info:
        partitions, _, _ = group_pairs(pairs, MSGPACK, 2, combine)  # type: ignore[arg-type]
        for groups in partitions:
            MSGPACK.encode_partition(groups)
    message = str(info.value)
    assert message.startswith(expected) and ADVICE in message and "\n" not in message


def test_the_message_names_where_the_function_is_defined() -> None:
    def map_batch(records: object) -> object:
        yield from ()

    job = Job(reduce=lambda k, v: iter(()), map_batch=map_batch)  # type: ignore[arg-type]
    line = map_batch.__code__.co_firstlineno
    text = _worker._located(UnencodableRecord("map", "yielded it"), job)
    assert text == f"map_batch (test_cli_usability.py, line {line}) yielded it"


def test_totalorder_sampling_names_a_key_that_cannot_travel(tmp_path: Path) -> None:
    job = _job(tmp_path, "bags.py", "from p2pmr import TotalOrder\n\n"
                                    "partition = TotalOrder()\n\n\n"
                                    "def map(key, line):\n"
                                    "    yield frozenset(line.split()), 1\n\n\n"
                                    "def reduce(key, values):\n"
                                    "    yield key, 1\n")
    block = _worker.SampleBlock("in.txt", 0, LINES.encode(), first=True, last=True)
    outcome = _worker.run_sample(_worker.SampleRequest(
        b"code", dump_job(load_job_file(job)), "msgpack", 3, [block]))
    assert outcome.failure is not None
    assert outcome.failure.message.startswith("map (bags.py, line 6) yielded the key frozenset(")
    assert ", a frozenset, which msgpack cannot encode" in outcome.failure.message
    assert not outcome.failure.traceback and "Traceback" in outcome.failure.debug


def test_run_help_says_what_a_job_file_defines_and_its_example_runs(tmp_path: Path) -> None:
    text = run_cli("run", "--help").stdout.decode()
    for name in ("map(key, line)", "map_batch(records)", "reduce(key, values)",
                 "combine(key, values)", "partition(key, n)", "TotalOrder()",
                 "RECORD_KEYS = False", "--encoding pickle"):
        assert name in text, name
    example = re.search(r"Example: +(def map.*)\n +(def reduce.*)\n", text)
    assert example, text
    job = _job(tmp_path, "example.py", f"{example[1]}\n{example[2]}\n")
    code, out, err = _run(tmp_path, job)
    assert code == 0, err
    output = run_cli("cat", "--repo", str(tmp_path / "repo"), out.split()[-1]).stdout.decode()
    got = dict(line.split("\t") for line in output.splitlines())
    assert {k: int(v) for k, v in got.items()} == Counter(LINES.split())


def test_log_level_before_or_after_the_subcommand_or_from_the_environment(
        tmp_path: Path) -> None:
    repo = ["--repo", str(tmp_path / "repo")]
    debug = re.compile(r" DEBUG +p2pmr\.repo: no node is running")
    assert not debug.search(run_cli("id", *repo).stderr.decode())
    assert debug.search(run_cli("id", "--log-level", "DEBUG", *repo).stderr.decode())
    assert debug.search(run_cli("--log-level", "debug", "id", *repo).stderr.decode())
    assert debug.search(run_cli("id", *repo, env={"P2PMR_LOG_LEVEL": "DEBUG"}
                                ).stderr.decode())
    # After the subcommand it wins over the environment and the group.
    assert not debug.search(run_cli("--log-level", "DEBUG", "id", "--log-level", "ERROR",
                                    *repo, env={"P2PMR_LOG_LEVEL": "DEBUG"}).stderr.decode())
    bad = run_cli("id", "--log-level", "LOUD", *repo, check=False)
    assert bad.returncode == 2 and b"--log-level" in bad.stderr


def _id(repo: Path) -> tuple[list[str], dict[str, object]]:
    lines = run_cli("id", "--repo", str(repo)).stdout.decode().splitlines()
    doc = json.loads(run_cli("id", "--json", "--repo", str(repo)).stdout)
    return lines, doc


def test_id_prints_a_running_peers_addresses_and_never_a_crashed_ones(tmp_path: Path) -> None:
    repo = tmp_path / "peer"
    peer = PeerProcess(repo)
    try:
        lines, doc = _id(repo)
        assert lines == [peer.peer_id, *peer.addrs]
        assert all(a.startswith("/ip4/127.0.0.1/tcp/") and a.endswith(f"/p2p/{peer.peer_id}")
                   for a in lines[1:])
        assert doc == {"peer_id": peer.peer_id, "addrs": peer.addrs, "pid": peer.proc.pid}
    finally:
        peer.kill()  # SIGKILL: it cannot remove its node.json
    assert (repo / "node.json").exists()
    lines, doc = _id(repo)
    assert lines == [peer.peer_id] and doc == {"peer_id": peer.peer_id, "addrs": [], "pid": None}
    # A node killed in a container was pid 1, which every later container on
    # the volume sees alive: the repo's free lock tells it is gone.
    stale = json.loads((repo / "node.json").read_text())
    (repo / "node.json").write_text(json.dumps({**stale, "pid": 1}))
    assert _id(repo)[0] == [peer.peer_id]
    # The next node on the repo replaces the stale file, and removes its own on a clean stop.
    with PeerProcess(repo) as again:
        assert _id(repo)[0] == [peer.peer_id, *again.addrs]
    assert again.proc.returncode == 0 and not (repo / "node.json").exists()
    assert _id(repo)[0] == [peer.peer_id]
