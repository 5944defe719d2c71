"""Trust and bad input: who may run code, what is decoded, and what a peer
survives. The peers here are real processes; the attacker is a real node."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pmr import InitMaster, JobFailed
from p2pmr.encoding import MSGPACK, get_codec
from p2pmr.errors import EncodingError, P2PMRError
from p2pmr.job import Job, load_job_file
from p2pmr.network import Libp2pStream
from p2pmr.node import Node, open_node
from p2pmr.peer import PeerConfig, register_protocol
from p2pmr.storage import unixfs
from p2pmr.storage.cid import CID
from p2pmr.storage.varint import encode_uvarint
from p2pmr.wire._pb import mapreduce_pb2 as pb  # raw frames, for fuzzing
from p2pmr.wire.codes import ErrorCode
from p2pmr.wire.framing import PROTOCOL_ID, FrameReader
from p2pmr.wire.messages import Accepted, Error, Message, Progress

from .helpers import GUTENBERG, ROOT, PeerProcess, run_cli
from .swarm import Swarm, output_counts, reference_counts

JOBS = Path(__file__).parent / "jobs"
WORDCOUNT = ROOT / "examples" / "wordcount.py"


# -- trust ---------------------------------------------------------------------


def marker_job(marker: Path) -> Job:
    """A job whose map leaves a file behind if it ever runs."""
    path = str(marker)

    def map_batch(records):  # type: ignore[no-untyped-def]
        with open(path, "w") as handle:
            handle.write("ran")
        yield "n", sum(1 for _ in records)

    def reduce(key, values):  # type: ignore[no-untyped-def]
        yield key, sum(values)

    return Job(reduce=reduce, map_batch=map_batch, name="marker")


async def test_untrusted_master_is_refused_and_nothing_runs(master: Node, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    cid = await master.add_path(GUTENBERG / "pg-metamorphosis.txt")
    someone_else = run_cli("id", "--repo", str(tmp_path / "other")).stdout.decode().strip()
    peer = await trio.to_thread.run_sync(lambda: PeerProcess(
        tmp_path / "peer", ["--bootstrap", master.multiaddrs[0], "--trust", someone_else]))
    try:
        # At the protocol level: an explicit refusal, before anything is read.
        with trio.fail_after(20):
            while str(PROTOCOL_ID) not in _protocols(master, peer.peer_id):  # noqa: ASYNC110
                await trio.sleep(0.05)
            stream = await master.network.open_stream(_pid(peer.peer_id), PROTOCOL_ID)
            frame = await FrameReader(stream).read(10)
        assert isinstance(frame, Error) and frame.code is ErrorCode.NOT_AUTHORISED
        assert "not a trusted master" in frame.message
        # And as a job: the peer is excluded, the job fails, the code never ran.
        job = InitMaster(master, cid, job=marker_job(marker), n_reducers=1, wait_for_workers=3)
        with trio.fail_after(30), pytest.raises(JobFailed, match="does not trust this master"):
            await job.run()
        assert all(s.excluded for s in job.get_peer_status().values())
    finally:
        peer.kill()
    assert not marker.exists()
    assert "refused a stream from untrusted peer" in peer.stderr


def _pid(text: str) -> object:
    from libp2p.peer.id import ID

    return ID.from_base58(text)


def _protocols(node: Node, peer_id: str) -> list[str]:
    from p2pmr._libp2p import protocols_of

    return protocols_of(node.host, _pid(peer_id))  # as the master's network sees them


async def test_trust_file_in_repo(master: Node, tmp_path: Path) -> None:
    repo = tmp_path / "peer"
    repo.mkdir()
    (repo / "trusted_masters").write_text(f"# the lab's master\n{master.peer_id}\n")
    cid = await master.add_path(GUTENBERG / "pg-metamorphosis.txt")
    peer = await trio.to_thread.run_sync(
        lambda: PeerProcess(repo, ["--bootstrap", master.multiaddrs[0]]))
    try:
        with trio.fail_after(60):
            root = await InitMaster(master, cid, job=load_job_file(WORDCOUNT), n_reducers=1).run()
    finally:
        peer.kill()
    assert await output_counts(master, root) == \
        reference_counts([GUTENBERG / "pg-metamorphosis.txt"])


async def test_a_peer_that_does_not_trust_the_master_costs_seconds(master: Node,
                                                                    tmp_path: Path) -> None:
    """The master says at once which peer refused it and how to fix that, and
    fails in seconds, not after waiting out wait_for_workers (120 s)."""
    cid = await master.add_path(GUTENBERG / "pg-metamorphosis.txt")
    peer = await trio.to_thread.run_sync(lambda: PeerProcess(
        tmp_path / "peer", ["--bootstrap", master.multiaddrs[0]]))
    try:
        job = InitMaster(master, cid, job=load_job_file(WORDCOUNT), n_reducers=1)
        started = trio.current_time()
        with trio.fail_after(40), pytest.raises(JobFailed) as info:
            await job.run()
        elapsed = trio.current_time() - started
    finally:
        peer.kill()
    message = str(info.value)
    assert f"peer {peer.peer_id} was excluded: it does not trust this master" in message
    assert f"--trust {master.peer_id}" in message and "trusted_masters" in message
    assert elapsed < 30, f"took {elapsed:.0f}s"
    # The peer said at start that it would refuse everyone, and how to fix it.
    assert "trusts no master" in peer.stderr and "--trust MASTER_PEER_ID" in peer.stderr


def test_trust_takes_only_peer_ids(tmp_path: Path) -> None:
    result = run_cli("peer", "--repo", str(tmp_path), "--trust", "my-master", check=False)
    assert result.returncode == 2
    assert b"'my-master' is not a peer ID" in result.stderr and b"p2pmr id" in result.stderr


def test_trust_any_warns_loudly(tmp_path: Path) -> None:
    with PeerProcess(tmp_path / "peer", ["--trust-any"]) as peer:
        pass
    assert "WARNING: --trust-any" in peer.stderr and "TRUSTING ANY MASTER" in peer.stderr


# -- fuzzing the handler ------------------------------------------------------------


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PeerProcess, Path]]:
    """One real peer process that trusts the fuzzer, for every example."""
    base = tmp_path_factory.mktemp("fuzz")
    fuzzer_repo = base / "fuzzer"
    fuzzer_id = run_cli("id", "--repo", str(fuzzer_repo)).stdout.decode().strip()
    peer = PeerProcess(base / "peer", ["--trust", fuzzer_id, "--workers", "1",
                                       "--fetch-timeout", "2"])
    yield peer, fuzzer_repo
    peer.kill()


def _frame(**fields: object) -> bytes:
    frame = pb.Frame(version=1, **fields)  # type: ignore[arg-type]
    payload = frame.SerializeToString()
    return encode_uvarint(len(payload)) + payload


def _spec(code: bytes = b"", reducers: int = 2) -> pb.JobSpec:
    job = bytes(CID.hash(b"job"))
    return pb.JobSpec(job=job, code=code or bytes(CID.hash(b"no such code")),
                      reducers=reducers)


def _map_task(block: bytes, index: int = 0) -> pb.MapTask:
    return pb.MapTask(id=pb.TaskId(job=bytes(CID.hash(b"job")), phase=pb.MAP, index=index),
                      split=pb.Split(block=block, size=10, first=True, last=True))


VALID = _frame(assignment=pb.Assignment(job=_spec(), heartbeat_ms=100,
                                        maps=[_map_task(bytes(CID.hash(b"missing block")))]))

frames = st.one_of(
    st.binary(max_size=300),                                         # noise
    st.binary(max_size=64).map(lambda b: encode_uvarint(1 << 40) + b),  # huge length prefix
    st.integers(1, len(VALID) - 1).map(lambda n: VALID[:n]),         # truncated frames
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)),
             min_size=1, max_size=6).map(                            # mutated frames
        lambda edits: bytes(_mutate(VALID, edits))),
    st.integers(10, 2**20).map(lambda field: _frame_raw(field)),     # unknown message types
    st.sampled_from([                                                # wrong types, versions
        _frame(cancel=pb.Cancel(reason="nothing to cancel")),
        _frame(progress=pb.Progress(records=1)),
        _frame(error=pb.Error(message="peers don't take errors")),
        encode_uvarint(4) + b"\x08\x02\x12\x00",                     # version 2, empty body
        _frame(assignment=pb.Assignment(job=_spec(reducers=0), maps=[_map_task(b"x")])),
        _frame(assignment=pb.Assignment(job=_spec())),                # no tasks
        _frame(assignment=pb.Assignment(job=_spec(), maps=[_map_task(b"\x01\x02")] * 2)),
    ]),
    st.just(VALID),                                                  # CIDs that don't exist
)


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytearray:
    out = bytearray(data)
    for pos, value in edits:
        out[pos] = value
    return out


def _frame_raw(field: int) -> bytes:
    """A frame whose body is a field number this protocol does not define."""
    payload = b"\x08\x01" + encode_uvarint(field << 3 | 2) + b"\x00"
    return encode_uvarint(len(payload)) + payload


async def _send(peer: PeerProcess, repo: Path, data: bytes, *, half_close: bool = True,
                deadline: float = 15.0) -> Message | None:
    """Send raw bytes on a fresh stream; return the peer's first frame, or None."""
    async with open_node(repo) as node:
        await node.connect(peer.addr)
        stream = await node.host.new_stream(_pid(peer.peer_id), [PROTOCOL_ID])
        await stream.write(data)
        if half_close:
            await stream.close_write()
        reader = FrameReader(Libp2pStream(stream), max_size=4 * 1024 * 1024)
        with trio.fail_after(deadline):  # never a hang
            try:
                return await reader.read(deadline)
            except P2PMRError:
                return None  # the peer reset the stream: also an acceptable answer


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=frames)
def test_fuzzed_frames_get_an_error_or_a_closed_stream(target: tuple[PeerProcess, Path],
                                                       data: bytes) -> None:
    peer, repo = target
    reply = trio.run(_send, peer, repo, data)
    if reply is not None:
        assert isinstance(reply, (Error, Accepted, Progress))
        if isinstance(reply, Error):
            assert reply.code is not ErrorCode.ERROR_UNSPECIFIED and reply.message
    assert peer.proc.poll() is None, "the peer crashed"


async def test_bad_job_code_is_an_error_not_a_crash(target: tuple[PeerProcess, Path]) -> None:
    peer, repo = target

    class Bomb:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (eval, ("1/0",))

    for code, expected in ((b"this is not a pickle", "cannot load the job's code"),
                           (cloudpickle.dumps(Bomb()), "ZeroDivisionError")):
        async with open_node(repo) as node:
            code_cid = await node.add_bytes(code)
            block_cid = await node.add_bytes(b"one line\n")
            await node.connect(peer.addr)
            stream = await node.host.new_stream(_pid(peer.peer_id), [PROTOCOL_ID])
            await stream.write(_frame(assignment=pb.Assignment(
                job=_spec(code=bytes(code_cid)), heartbeat_ms=200,
                maps=[_map_task(bytes(block_cid))])))
            reader = FrameReader(Libp2pStream(stream))
            with trio.fail_after(30):
                while True:
                    frame = await reader.read(10)
                    assert frame is not None
                    if isinstance(frame, Error):
                        break
        assert frame.code is ErrorCode.BAD_JOB and expected in (frame.message +
                                                               frame.traceback)
    assert peer.proc.poll() is None


async def test_trickled_frame_times_out(target: tuple[PeerProcess, Path]) -> None:
    """A sender that never finishes its frame is cut off at the deadline."""
    peer, repo = target
    async with open_node(repo) as node:
        await node.connect(peer.addr)
        stream = await node.host.new_stream(_pid(peer.peer_id), [PROTOCOL_ID])
        await stream.write(VALID[:5])
        started = trio.current_time()
        with trio.fail_after(30):
            try:
                reply = await FrameReader(Libp2pStream(stream)).read(30)
            except P2PMRError:
                reply = None
        assert reply is None or (isinstance(reply, Error) and
                                 reply.code is ErrorCode.BAD_REQUEST)
        assert trio.current_time() - started < 20


async def test_peer_still_runs_jobs_after_fuzzing(target: tuple[PeerProcess, Path]) -> None:
    peer, repo = target
    async with open_node(repo) as node:
        await node.connect(peer.addr)
        cid = await node.add_path(GUTENBERG / "pg-being_ernest.txt")
        with trio.fail_after(60):
            root = await InitMaster(node, cid, job=load_job_file(WORDCOUNT), n_reducers=2).run()
        assert await output_counts(node, root) == \
            reference_counts([GUTENBERG / "pg-being_ernest.txt"])
    assert peer.proc.poll() is None


# -- limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(("job", "args", "message"), [
    ("hog_memory.py", ["--max-task-memory", "600"], "exceeded the worker memory limit of 600 MiB"),
    ("spin.py", ["--max-task-cpu", "2"], "exceeded its CPU time limit"),
    ("sleep_forever.py", ["--max-task-time", "3"], "wall-clock limit"),
])
async def test_limit_breaches_are_stopped_and_reported(master: Node, tmp_path: Path, job: str,
                                                       args: list[str], message: str) -> None:
    cid = await master.add_path(GUTENBERG / "pg-metamorphosis.txt")
    peer = await trio.to_thread.run_sync(lambda: PeerProcess(
        tmp_path / "peer", ["--bootstrap", master.multiaddrs[0], "--trust",
                            str(master.peer_id), "--workers", "1", *args]))
    try:
        with trio.fail_after(120), pytest.raises(JobFailed) as info:
            await InitMaster(master, cid, job=load_job_file(JOBS / job), n_reducers=1).run()
        assert "LIMIT_EXCEEDED" in str(info.value) and message in str(info.value)
        # The peer is healthy: the same peer then runs a good job.
        with trio.fail_after(60):
            root = await InitMaster(master, cid, job=load_job_file(WORDCOUNT), n_reducers=1).run()
        assert await output_counts(master, root) == \
            reference_counts([GUTENBERG / "pg-metamorphosis.txt"])
        assert peer.proc.poll() is None
    finally:
        peer.kill()


async def test_input_limit_covers_all_of_a_reduces_inputs_together(master: Node,
                                                                  tmp_path: Path) -> None:
    """Each map output is small, but a reduce fetching them concurrently must
    not let all of them pass one check of the same remaining budget."""
    cid = await master.add_path(GUTENBERG)
    config = PeerConfig(workers=1, max_input_size=300 * 1024)
    async with open_node(tmp_path / "peer", bootstrap=[master.multiaddrs[0]]) as peer:
        register_protocol(peer, trust=[master.peer_id], config=config)
        with trio.fail_after(120), pytest.raises(JobFailed) as info:
            # Splits of one block each: every map task fits the limit.
            await InitMaster(master, cid, job=load_job_file(WORDCOUNT), n_reducers=1,
                             split_size=0).run()
    message = str(info.value)
    assert "reduce task 0" in message and "LIMIT_EXCEEDED" in message
    assert "limit for all inputs together" in message


# -- data encoding -----------------------------------------------------------------------


def test_msgpack_keeps_tuples_and_refuses_other_types_by_name() -> None:
    value = {"k": (1, ("nested", b"\x00")), (2, 3): [None, True, 1.5, 2**100, -(2**70)]}
    assert MSGPACK.loads(MSGPACK.dumps(value)) == value
    for bad in ({1, 2}, object(), Path("/x"), 3 + 4j):
        with pytest.raises(EncodingError, match=type(bad).__name__):
            MSGPACK.dumps(bad)
    with pytest.raises(EncodingError, match="opted in"):
        get_codec("pickle")
    assert get_codec("pickle", allow_pickle=True).loads(
        get_codec("pickle", allow_pickle=True).dumps({1, 2})) == {1, 2}


async def test_unencodable_output_fails_with_the_type_named(master: Node, tmp_path: Path) -> None:
    def map_batch(records):  # type: ignore[no-untyped-def]
        yield "key", {1, 2, 3}

    def reduce(key, values):  # type: ignore[no-untyped-def]
        yield key, len(values)

    cid = await master.add_bytes(b"a line\n")
    swarm = Swarm(master, tmp_path / "peers")
    try:
        await trio.to_thread.run_sync(swarm.start)
        job = Job(reduce=reduce, map_batch=map_batch, name="sets")
        with trio.fail_after(60), pytest.raises(JobFailed, match="yielded a set as the value"):
            await InitMaster(master, cid, job=job, n_reducers=1).run()
    finally:
        swarm.close()


async def test_pickle_encoding_needs_the_peers_opt_in(master: Node, tmp_path: Path) -> None:
    cid = await master.add_bytes(b"a line\n")
    swarm = Swarm(master, tmp_path / "peers")
    try:
        await trio.to_thread.run_sync(swarm.start)
        job = InitMaster(master, cid, job=load_job_file(WORDCOUNT), n_reducers=1, encoding="pickle")
        with trio.fail_after(60), pytest.raises(JobFailed, match="opted in"):
            await job.run()
    finally:
        swarm.close()


# -- private swarms ---------------------------------------------------------------------


async def test_private_swarm_needs_the_key(tmp_path: Path) -> None:
    key = "ab" * 32
    async with open_node(tmp_path / "a", psk=key) as a:
        async with open_node(tmp_path / "b", psk=key) as b:
            await b.connect(a.multiaddrs[0])
            data = b"private data\n" * 1000
            cid = await a.add_bytes(data)
            assert await unixfs.read_range(b.blocks, cid) == data
        for other in ("cd" * 32, None):
            async with open_node(tmp_path / f"c-{other}", psk=other) as c:
                with trio.fail_after(15), pytest.raises(P2PMRError, match="could not connect"):
                    await c.connect(a.multiaddrs[0], timeout=5)
    with pytest.raises(P2PMRError, match="64 hex digits"):
        async with open_node(tmp_path / "bad", psk="not hex"):
            pass


# -- Byzantine peers ---------------------------------------------------------------------


async def test_verify_2_outvotes_a_lying_peer(master: Node, tmp_path: Path) -> None:
    cid = await master.add_path(GUTENBERG)
    swarm = Swarm(master, tmp_path / "peers")
    try:
        liar = await trio.to_thread.run_sync(lambda: swarm.start("liar", name="liar"))
        for _ in range(2):
            await trio.to_thread.run_sync(swarm.start)
        job = InitMaster(master, cid, job=load_job_file(WORDCOUNT), n_reducers=3, verify=2)
        with trio.fail_after(180):
            root = await job.run()
        assert await output_counts(master, root) == reference_counts(sorted(GUTENBERG.iterdir()))
        status = job.get_peer_status()
        assert status[liar.peer_id].excluded
        assert not any(s.excluded for p, s in status.items() if p != liar.peer_id)
    finally:
        swarm.close()


def test_cli_rejects_a_bad_psk(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "p2pmr", "peer", "--repo", str(tmp_path),
                             "--psk", "short"], capture_output=True, timeout=60)
    assert result.returncode == 1 and b"64 hex digits" in result.stderr



def test_a_split_that_names_an_inner_node_is_refused_not_mapped() -> None:
    """A split whose block is not the leaf it claims (here the file's root,
    whose children hold the data) is a bad request, not an empty map."""
    from p2pmr._worker import MapRequest, WorkerLimits, run_map
    from p2pmr.storage.unixfs import ImportOptions, import_bytes
    from p2pmr.wire.codes import ErrorCode

    data = b"a line\n" * 100_000
    root, blocks = import_bytes(data, ImportOptions())
    stored = dict(blocks)
    code = cloudpickle.dumps(load_job_file(WORDCOUNT))

    def request(cid: CID, size: int) -> MapRequest:
        return MapRequest(code_cid=b"c", code=code, encoding="msgpack", allow_pickle=False,
                          reducers=1, cid_version=0, limits=WorkerLimits(cpu_seconds=None),
                          block_cids=[bytes(cid)], blocks=[stored[cid]], size=size,
                          sizes=[size])

    refused = run_map(request(root, 262144))
    assert refused.failure is not None and refused.failure.code is ErrorCode.BAD_REQUEST
    assert "not the 262144" in refused.failure.message
    leaf = next(c for c, b in blocks if c != root)
    assert run_map(request(leaf, 262144)).failure is None
