"""``p2pmr run``: everything around a :class:`Master` that a command line needs.

Start the master's node, add a local input, optionally start local peers,
show progress, and write the output locally if asked.

Local peers are started first, before this process even imports libp2p:
their interpreters start, import and open their nodes while the master's
does the same, and they learn its address once it is up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import trio

from .errors import JobError, P2PMRError, collapsed
from .job import in_fresh_process, pickle_job_file
from .localswarm import LocalPeer, MasterAddress, local_swarm, stop_peers
from .master.journal import find_journal
from .master.options import MasterOptions
from .output import write_output
from .partition import TotalOrder
from .settings import DEFAULT_LISTEN
from .storage import unixfs
from .storage.cid import CID

if TYPE_CHECKING:  # imported once local peers are on their way (see run_job)
    from .master import Master
    from .node import Node
    from .verify import Sample

__all__ = ["RunSettings", "open_master_node", "run_job"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    repo: Path
    jobfile: Path | None
    input: str | None
    reducers: int | None
    local_peers: int = 0
    local_workers: int | None = None
    local_peer_args: Sequence[str] = ()  # more `p2pmr peer` options for local peers
    bootstrap: Sequence[str] = ()
    listen: Sequence[str] = DEFAULT_LISTEN
    announce: Sequence[str] = ()  # addresses to advertise instead (NAT, port mapping)
    output: Path | None = None
    overwrite: bool = False
    resume: bool = False
    master: MasterOptions = field(default_factory=MasterOptions)
    psk: str | None = None
    progress: bool = True
    ipfs_api: str | None = None
    reuse: Sequence[CID] = ()          # records (outputs or attestations) to take tasks from
    trust_masters: Sequence[str] = ()  # whose signed records are taken without a check
    reuse_sample: Sample | None = None  # how many tasks of any other record to check first
    events: Path | None = None         # --events FILE: one JSON line per task and peer event
    dashboard: str | None = None       # --dashboard HOST:PORT
    status_socket: bool = True         # serve the status API on the repo's socket


def _traffic(node: Node) -> dict[str, int]:
    """Bytes through this (the master's) process: protocol frames, and block
    payloads exchanged over Bitswap (0 with a Kubo daemon, which moves them);
    map outputs move peer to peer, so a job's blocks_in is about its output,
    not its shuffle."""
    from .wire.framing import TRAFFIC

    stats = node.bitswap.stats if node.bitswap is not None else None
    return {"protocol_in": TRAFFIC.bytes_in, "protocol_out": TRAFFIC.bytes_out,
            "blocks_in": stats.bytes_received if stats else 0,
            "blocks_out": stats.bytes_sent if stats else 0}


def _tree_size(root: Path) -> int:
    total = 0
    for path in root.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:  # a file removed while we looked
            continue
    return total


async def _resolve_input(node: Node, text: str, cid_version: int) -> CID:
    path = trio.Path(text)
    if await path.exists():
        options = unixfs.ImportOptions(cid_version=cid_version)
        cid = await unixfs.add_path(node.blocks, text, options)
        await node.blocks.pin(cid, recursive=True)  # as `p2pmr add` does: gc keeps it
        log.info("added %s as %s", text, cid)
        return cid
    try:
        return CID.parse(text)
    except P2PMRError:
        raise JobError(f"--input {text!r} is neither an existing path nor a CID") from None


class _Progress:
    """Phase progress on stderr: bars on a terminal, a line per change elsewhere.

    Nothing is shown while the job is still being planned (its task counts
    are not known yet), and the final state is shown once the job ends, so
    the last thing on screen is what happened, not a snapshot from before.
    """

    def __init__(self, master: Master) -> None:
        self.master = master
        self.bars: tuple[Any, Any] | None = None
        self.last_line = ""

    def show(self) -> None:
        master = self.master
        if master.phase == "planning":
            return
        statuses = (master.get_map_status(), master.get_reduce_status())
        if sys.stderr.isatty():
            if self.bars is None:
                from tqdm import tqdm

                self.bars = (tqdm(desc="map   ", unit="task", total=0, file=sys.stderr),
                             tqdm(desc="reduce", unit="task", total=0, file=sys.stderr))
            for bar, status in zip(self.bars, statuses, strict=True):
                bar.total = status.total
                bar.n = status.complete
                bar.set_postfix(running=status.in_progress, failed=status.failed,
                                refresh=False)
                bar.refresh()
            return
        m, r = statuses
        line = f"map {m.complete}/{m.total}  reduce {r.complete}/{r.total}"
        if line != self.last_line:
            click.echo(f"progress: {line}", err=True)
            self.last_line = line

    def close(self) -> None:
        self.show()
        if self.bars is not None:
            for bar in self.bars:
                bar.close()

    async def run(self) -> None:
        interval = 0.2 if sys.stderr.isatty() else 1.0
        while True:
            self.show()
            await trio.sleep(interval)


async def _run_with_progress(master: Master, progress: bool) -> CID:
    if not progress:
        return await master.run()
    display = _Progress(master)
    try:
        with collapsed():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(display.run)
                root = await master.run()
                nursery.cancel_scope.cancel()
    finally:
        display.close()
    return root


async def _run_observed(master: Master, settings: RunSettings) -> CID:
    """Run the master with its status served (the repo's socket, and the
    dashboard if asked) and its events written where asked."""
    if settings.events is not None:
        try:
            master.events.attach(settings.events)
        except OSError as exc:
            raise JobError(f"--events {settings.events}: {exc.strerror or exc}") from exc
    if not settings.status_socket and settings.dashboard is None:
        return await _run_with_progress(master, settings.progress)
    from .dashboard.serve import serving
    from .status import LiveStatus

    async with serving(LiveStatus(master, settings.repo), settings.repo,
                       dashboard=settings.dashboard, local=settings.status_socket) as served:
        if served.dashboard is not None:
            click.echo(f"dashboard: {served.dashboard}/", err=True)
        return await _run_with_progress(master, settings.progress)


async def _load_job(jobfile: Path) -> tuple[bytes, str, TotalOrder | None, bool]:
    # Import and pickle the job file in a worker process: the master's own
    # process never executes job code. A fresh process each time, started
    # with a fixed hash seed: the same file then always pickles to the same
    # bytes (see job.STABLE_HASH_ENV).
    try:
        return await in_fresh_process(pickle_job_file, str(jobfile))
    except P2PMRError:
        raise
    except Exception as exc:
        raise JobError(f"cannot load {jobfile}: {exc!r}") from exc



def _import_master() -> None:
    import p2pmr.master.core
    import p2pmr.node  # noqa: F401


async def _start_local_peers(settings: RunSettings, stack: contextlib.AsyncExitStack
                             ) -> tuple[MasterAddress, list[LocalPeer], Path]:
    """Start the local peers, before the master's node: they are told where
    it is (the returned address, once set) and boot while it starts, the job
    is loaded and the input added."""
    master = MasterAddress()
    base = Path(tempfile.mkdtemp(prefix="p2pmr-peers-"))
    stack.callback(shutil.rmtree, base, ignore_errors=True)
    extra = [*settings.local_peer_args]
    if settings.ipfs_api is None:
        # On one disk, peers read the master's blocks where they lie (read
        # only, each checked) rather than over the network. The store may
        # not exist yet: the master's node is not open.
        blocks = settings.repo.resolve() / "blocks"
        await trio.Path(blocks).mkdir(parents=True, exist_ok=True)
        extra += ["--read-store", str(blocks.parent)]
    if settings.master.encoding == "pickle":
        extra.append("--allow-pickle")
    peers = await stack.enter_async_context(local_swarm(
        settings.local_peers, base, master, workers=settings.local_workers, extra_args=extra,
        wait=False, temporary=True, siblings=settings.ipfs_api is None))
    return master, peers, base


def _read_local_peers(node: Node, n: int, base: Path) -> None:
    """The master reads its local peers' stores in place too: the part files
    it fetches are on this disk already. Pinning the output still copies them
    into its own repo, which outlives the peers'."""
    from .storage.embedded import EmbeddedStore

    if isinstance(node.blocks, EmbeddedStore):
        node.blocks.read_from([base / f"peer-{i}" for i in range(n)])


async def _attest(master: Master, node: Node) -> CID:
    """Sign, with the master's key, who produced each task this run ran;
    stored and pinned beside the output (spec section 6.7)."""
    from .attestation import attest

    assert master.output is not None and master.job_cid is not None
    producers = {f"{task.phase}/{task.index}": str(task.completed_by)
                 for phase in ("map", "reduce") for task in master.scheduler.phase_tasks(phase)
                 if task.completed_by is not None}
    data = attest(node.host.get_private_key(), node.host.get_public_key(),
                  output=master.output, job=master.job_cid, producers=producers,
                  agreed=master.scheduler.policy.verify)
    cid = await unixfs.add_bytes(node.blocks, data)
    await node.blocks.pin(cid)
    return cid


async def _write_report(master: Master, node: Node, repo: Path, elapsed: float) -> CID:
    """The run report, ``jobs/<job>/report.json`` in the master's repo: timings,
    where task time went, traffic and locality, which the manifest leaves out
    so that the output CID stays a function of the job."""
    attestation = await _attest(master, node)
    report = {"output": str(master.output), "job": str(master.job_cid), "wall_seconds": elapsed,
              "attestation": str(attestation),
              "timings": master.timings, "resumed_tasks": master.resumed_tasks,
              "tasks": master.task_counts(),
              "task_profile": master.task_profile(),
              "counts": master.manifest.get("counts", {}),
              "peers": {k: vars(v) for k, v in master.get_peer_status().items()},
              "map_reruns": master.map_reruns,
              "traffic": {**_traffic(node), "repo_bytes":
                          await trio.to_thread.run_sync(_tree_size, repo)},
              "locality": master.locality.report.as_json() if master.locality else {}}
    report_dir = repo / "jobs" / str(master.job_cid)
    await trio.Path(report_dir).mkdir(parents=True, exist_ok=True)
    await trio.Path(report_dir / "report.json").write_text(json.dumps(report, indent=2))
    return attestation


async def open_master_node(settings: RunSettings, stack: contextlib.AsyncExitStack,
                           imported: Callable[[], object] = lambda: None) -> Node:
    """The master's node, with its local peers (stopped, by ``stack``, before
    the node closes, so that they do not redial it)."""
    local = await _start_local_peers(settings, stack) if settings.local_peers else None
    # The master's own heavy imports (libp2p) in a thread, so that the
    # event loop goes on spawning the local peers meanwhile.
    await trio.to_thread.run_sync(_import_master)
    imported()
    from .node import open_node

    node = await stack.enter_async_context(open_node(
        settings.repo, listen=settings.listen, announce=settings.announce,
        bootstrap=settings.bootstrap,
        ipfs_api=settings.ipfs_api, psk=settings.psk))
    if local is not None:
        local[0].set(node.multiaddrs[0], str(node.peer_id))
        _read_local_peers(node, settings.local_peers, local[2])
        stack.push_async_callback(stop_peers, local[1])
    return node


async def _take(node: Node, settings: RunSettings, imported: Callable[[], object]) -> None:
    from .reuse import take_records

    for taken in await take_records(node, settings.reuse, settings,
                                    trusted=settings.trust_masters,
                                    sample=settings.reuse_sample, imported=imported):
        click.echo(f"--reuse {taken.given}: {taken.how}"
                   + (f"; {taken.tasks} task(s) taken into the memo" if taken.tasks else ""),
                   err=True)


async def run_job(settings: RunSettings, *, imported: Callable[[], object] = lambda: None
                  ) -> CID:
    """Run the job; ``imported`` is called once libp2p is (the command line
    routes its logs then)."""
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        node = await open_master_node(settings, stack, imported)
        from .master import Master

        code: bytes | None = None
        name: str | None = None
        order: TotalOrder | None = None
        keys = True
        input_cid: CID | None = None

        async def load() -> None:
            nonlocal code, name, order, keys
            if settings.jobfile is not None:
                code, name, order, keys = await _load_job(settings.jobfile)

        async def add_input() -> None:
            nonlocal input_cid
            if settings.input is not None:
                input_cid = await _resolve_input(node, settings.input,
                                                 settings.master.cid_version)

        with collapsed():
            async with trio.open_nursery() as prep:
                prep.start_soon(load)
                prep.start_soon(add_input)
        reducers = settings.reducers or 1
        resume_job: CID | None = None
        if settings.resume and (code is None or input_cid is None):
            # The journal says what to run. Pin down which one here, so the
            # master resumes exactly the job found.
            found = find_journal(settings.repo / "jobs", input_cid=input_cid,
                                 name=name if code is not None else None)
            if found is None:
                raise JobError("--resume: this repo has no unfinished job"
                               + (f" on input {input_cid}" if input_cid else ""))
            input_cid, reducers, name = found.descriptor.input, found.descriptor.reducers, \
                found.descriptor.name
            resume_job = found.job
            log.info("resuming job %s (input %s, %d reducers)", found.job, input_cid, reducers)
        if input_cid is None:
            raise JobError("no input: give --input (or --resume an unfinished job)")
        options = dataclasses.replace(settings.master, resume=settings.resume,
                                      resume_job=resume_job)
        if settings.local_peers and options.memo:
            # Local peers' repos go with them: the master keeps a copy of each
            # map output, so that later jobs can take map tasks from the memo.
            options = dataclasses.replace(options, replicas=2)
        if settings.reuse:
            await _take(node, settings, imported)
        master = Master(node, input_cid, None, reducers, options, code=code, name=name,
                        total_order=order, record_keys=keys)
        root = await _run_observed(master, settings)
        elapsed = time.monotonic() - started
        attestation = await _write_report(master, node, settings.repo, elapsed)
        counts = master.task_counts()
        click.echo(f"job {master.job_cid} finished in {elapsed:.2f}s "
                   f"(map {master.timings.get('map', 0):.2f}s, "
                   f"reduce {master.timings.get('reduce', 0):.2f}s); tasks: "
                   f"{counts['executed']} run, {counts['reused']} reused from the memo, "
                   f"{counts['resumed']} resumed from the journal; attestation "
                   f"{attestation}", err=True)
        if settings.output is not None:
            files = await write_output(node, root, settings.output,
                                       overwrite=settings.overwrite)
            click.echo(f"wrote {len(files)} file(s) to {settings.output}", err=True)
        return root
