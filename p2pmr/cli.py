"""The ``p2pmr`` command line.

Storage commands (add, cat, ls, block get) work on the local repo with no
daemon and no network. Given ``--bootstrap`` they start a node to fetch what
the repo lacks; given ``--ipfs-api`` they use that Kubo daemon instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import trio

from . import unixfs
from .blockstore import BlockStore, FlatFSStore
from .cid import CID
from .errors import P2PMRError, collapsed
from .node import DEFAULT_LISTEN, default_repo, open_node

log = logging.getLogger("p2pmr.cli")

T = TypeVar("T")


class _Libp2pFilter(logging.Filter):
    """Pass py-libp2p records only at ``threshold`` and above.

    py-libp2p sets explicit INFO levels on some of its module loggers, so
    filtering at our handler is the only reliable way to keep it quiet.
    """

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("libp2p") or record.levelno >= self.threshold


def configure_logging(level: str) -> None:
    import libp2p  # noqa: F401  (its import resets its own loggers; do that first)

    numeric = getattr(logging, level.upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    if not os.environ.get("LIBP2P_DEBUG"):
        # py-libp2p detaches its loggers unless LIBP2P_DEBUG is set; route its
        # errors through ours so they are formatted like everything else.
        handler.addFilter(_Libp2pFilter(logging.WARNING if numeric <= logging.DEBUG
                                        else logging.ERROR))
        logging.getLogger("libp2p").propagate = True
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)


def run_async(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run a coroutine function under trio, turning our errors into exit status 1."""
    try:
        with collapsed():
            return trio.run(fn, *args)
    except P2PMRError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise SystemExit(130) from None


class Settings:
    def __init__(self, repo: Path, ipfs_api: str | None, bootstrap: tuple[str, ...]) -> None:
        self.repo = repo
        self.ipfs_api = ipfs_api
        self.bootstrap = bootstrap


def _merge(ctx: click.Context, repo: str | None, ipfs_api: str | None,
           bootstrap: tuple[str, ...] = ()) -> Settings:
    parent: Settings = ctx.find_object(Settings) or Settings(default_repo(), None, ())
    return Settings(Path(repo) if repo else parent.repo, ipfs_api or parent.ipfs_api,
                    bootstrap or parent.bootstrap)


def store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--repo and --ipfs-api, accepted before or after the subcommand."""
    fn = click.option("--ipfs-api", "ipfs_api", metavar="MULTIADDR", default=None,
                      help="Use this Kubo daemon's RPC API instead of the local repo.")(fn)
    fn = click.option("--repo", metavar="DIR", default=None,
                      help="Repo directory (default $P2PMR_REPO or ~/.p2pmr).")(fn)
    return fn


def fetch_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--bootstrap", multiple=True, metavar="MULTIADDR",
                      help="Fetch what the repo lacks from this peer (repeatable).")(fn)
    fn = click.option("--timeout", type=float, default=60.0, show_default=True,
                      help="Seconds to wait for a block from the network.")(fn)
    return fn


@contextlib.asynccontextmanager
async def open_store(settings: Settings, *, network: bool = False,
                     timeout: float = 60.0) -> AsyncIterator[BlockStore]:
    """The block store a storage command works on.

    Offline (no bootstrap) the local repo is used directly, without taking
    the repo lock, so these commands work while a peer runs on the same repo.
    """
    if settings.ipfs_api:
        from .kubo import KuboStore

        yield await KuboStore.connect(settings.ipfs_api, timeout=timeout)
        return
    if network and settings.bootstrap:
        from .bitswap import BitswapStore

        async with open_node(settings.repo, bootstrap=settings.bootstrap) as node:
            assert isinstance(node.blocks, BitswapStore)  # no --ipfs-api: the embedded store
            node.blocks.default_timeout = timeout
            yield node.blocks
        return
    await trio.Path(settings.repo).mkdir(parents=True, exist_ok=True)
    yield FlatFSStore(settings.repo)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@store_options
@click.option("--log-level", default=os.environ.get("P2PMR_LOG_LEVEL", "WARNING"),
              show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.version_option(package_name="p2pmr")
@click.pass_context
def main(ctx: click.Context, repo: str | None, ipfs_api: str | None, log_level: str) -> None:
    """Peer-to-peer, content-addressed MapReduce over IPFS."""
    configure_logging(log_level)
    ctx.obj = Settings(Path(repo) if repo else default_repo(), ipfs_api, ())


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("-r", "--recursive", is_flag=True, help="Add a directory tree.")
@click.option("--cid-version", type=click.Choice(["0", "1"]), default="0", show_default=True)
@click.option("--raw-leaves", is_flag=True, default=None,
              help="Store leaves as raw blocks (default for CIDv1).")
@click.option("--chunker", default="size-262144", show_default=True,
              help="Fixed-size chunker, size-N.")
@click.option("--hidden", is_flag=True, help="Include files whose names start with '.'.")
@store_options
@click.pass_context
def add(ctx: click.Context, path: Path, recursive: bool, cid_version: str,
        raw_leaves: bool | None, chunker: str, hidden: bool, repo: str | None,
        ipfs_api: str | None) -> None:
    """Add a file (or, with -r, a directory) and print its CID on the last line."""
    settings = _merge(ctx, repo, ipfs_api)
    if path.is_dir() and not recursive:
        raise click.UsageError(f"{path} is a directory; use -r")
    try:
        options = unixfs.ImportOptions.from_chunker(
            chunker, cid_version=int(cid_version), raw_leaves=raw_leaves)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    async def go() -> CID:
        async with open_store(settings) as store:
            return await unixfs.add_path(store, path, options, hidden=hidden)

    root = run_async(go)
    click.echo(f"added {root} {path.name}", err=True)
    click.echo(str(root))


@main.command()
@click.argument("cid")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Start at this byte.")
@click.option("--length", type=click.IntRange(min=0), default=None,
              help="Read at most this many bytes.")
@store_options
@fetch_options
@click.pass_context
def cat(ctx: click.Context, cid: str, offset: int, length: int | None, repo: str | None,
        ipfs_api: str | None, bootstrap: tuple[str, ...], timeout: float) -> None:
    """Print a file; for a directory, print its files in name order.

    Names starting with '_' or '.' are skipped, so a job's output directory
    prints as the concatenation of its parts.
    """
    settings = _merge(ctx, repo, ipfs_api, bootstrap)
    root = _parse_cid(cid)
    out = sys.stdout.buffer

    async def go() -> None:
        async with open_store(settings, network=True, timeout=timeout) as store:
            kind, _ = await unixfs.stat(store, root)
            if kind in ("directory", "hamt-shard"):
                files = [(p, c) for p, c in await unixfs.walk_files(store, root)
                         if not any(part.startswith(("_", ".")) for part in p.split("/"))]
            else:
                files = [("", root)]
            async def write(piece: bytes) -> None:
                out.write(piece)

            for _, file_cid in files:
                await unixfs.cat(store, file_cid, write, offset, length)
            out.flush()

    run_async(go)


@main.command(name="ls")
@click.argument("cid")
@store_options
@fetch_options
@click.pass_context
def ls_cmd(ctx: click.Context, cid: str, repo: str | None, ipfs_api: str | None,
           bootstrap: tuple[str, ...], timeout: float) -> None:
    """List a directory: CID, size and name of each entry."""
    settings = _merge(ctx, repo, ipfs_api, bootstrap)
    root = _parse_cid(cid)

    async def go() -> None:
        async with open_store(settings, network=True, timeout=timeout) as store:
            for entry in await unixfs.list_directory(store, root, resolve_types=True):
                suffix = "/" if entry.type == "directory" else ""
                click.echo(f"{entry.cid} {entry.tsize} {entry.name}{suffix}")

    run_async(go)


@main.command(name="id")
@store_options
@click.pass_context
def id_cmd(ctx: click.Context, repo: str | None, ipfs_api: str | None) -> None:
    """Print this repo's peer ID (creating the identity on first use)."""
    from .node import load_or_create_identity, peer_id_of

    settings = _merge(ctx, repo, ipfs_api)
    settings.repo.mkdir(parents=True, exist_ok=True)
    click.echo(peer_id_of(load_or_create_identity(settings.repo)))


@main.group()
def block() -> None:
    """Raw block operations."""


@block.command(name="get")
@click.argument("cid")
@store_options
@fetch_options
@click.pass_context
def block_get(ctx: click.Context, cid: str, repo: str | None, ipfs_api: str | None,
              bootstrap: tuple[str, ...], timeout: float) -> None:
    """Write a block's raw bytes to stdout."""
    settings = _merge(ctx, repo, ipfs_api, bootstrap)
    target = _parse_cid(cid)

    async def go() -> bytes:
        async with open_store(settings, network=True, timeout=timeout) as store:
            return await store.get(target, timeout=timeout)

    data = run_async(go)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@main.command()
@click.option("--listen", multiple=True, metavar="MULTIADDR",
              help="Listen address (repeatable; default /ip4/127.0.0.1/tcp/0). "
                   "Use /ip4/0.0.0.0/tcp/PORT to accept peers from other machines.")
@click.option("--bootstrap", multiple=True, metavar="MULTIADDR",
              help="Peer to connect to and stay connected to (repeatable).")
@click.option("--workers", type=int, default=None,
              help="Tasks run at once, each in its own process (default: the usable CPUs).")
@click.option("--trust", multiple=True, metavar="PEER_ID",
              help="A master allowed to run jobs here (repeatable); also read from "
                   "the repo's trusted_masters file.")
@click.option("--trust-any", is_flag=True,
              help="Run jobs from ANY master. Only for closed test swarms.")
@click.option("--allow-pickle", is_flag=True,
              help="Accept the pickle data encoding (unpickles data from other peers).")
@click.option("--max-task-memory", type=int, default=2048, show_default=True, metavar="MIB",
              help="Address-space limit of each worker process (0: none).")
@click.option("--max-task-cpu", type=float, default=600.0, show_default=True,
              metavar="SECONDS", help="CPU time limit per task (0: none).")
@click.option("--max-task-time", type=float, default=3600.0, show_default=True,
              metavar="SECONDS", help="Wall-clock limit per task.")
@click.option("--fetch-timeout", type=float, default=60.0, show_default=True,
              metavar="SECONDS", help="How long to wait for a task's input from the swarm.")
@click.option("--psk", envvar="P2PMR_PSK", default=None, metavar="HEX",
              help="Pre-shared key: only peers holding it can connect (64 hex digits).")
@click.option("--exit-with-parent", is_flag=True, hidden=True,
              help="Stop when the parent process dies (used by --local-peers).")
@store_options
@click.pass_context
def peer(ctx: click.Context, listen: tuple[str, ...], bootstrap: tuple[str, ...],
         workers: int | None, trust: tuple[str, ...], trust_any: bool, allow_pickle: bool,
         max_task_memory: int, max_task_cpu: float, max_task_time: float,
         fetch_timeout: float, psk: str | None, exit_with_parent: bool, repo: str | None,
         ipfs_api: str | None) -> None:
    """Run a peer that executes tasks for trusted masters, until SIGINT or SIGTERM."""
    from ._worker import WorkerLimits
    from .peer import PeerConfig, register_protocol, usable_cpus

    settings = _merge(ctx, repo, ipfs_api, bootstrap)
    config = PeerConfig(
        workers=workers or usable_cpus(), allow_pickle=allow_pickle,
        limits=WorkerLimits(memory_bytes=max_task_memory * 1024 * 1024 or None,
                            cpu_seconds=max_task_cpu or None),
        task_wall_seconds=max_task_time, fetch_timeout=fetch_timeout)
    if trust_any:
        click.echo("WARNING: --trust-any: any peer that can reach this one can run arbitrary "
                   "code on this machine. Use it only in a closed test swarm.", err=True)

    async def serve() -> None:
        async with open_node(settings.repo, listen=listen or DEFAULT_LISTEN,
                             bootstrap=settings.bootstrap, ipfs_api=settings.ipfs_api,
                             psk=psk) as node:
            service = register_protocol(node, trust=trust, trust_any=trust_any, config=config)
            click.echo(f"Peer ID: {node.peer_id}")
            click.echo("Listening on:")
            for addr in node.multiaddrs:
                click.echo(f"  {addr}")
            click.echo(f"Serving {service.config.workers} worker(s) for "
                       f"{service.trust.describe()}.")
            click.echo("Ready.")
            sys.stdout.flush()
            if exit_with_parent:
                await _watch_parent(parent)
            else:
                await trio.sleep_forever()

    parent = os.getppid()
    run_async(_until_stop_signal, serve)


@main.command()
@click.argument("jobfile", required=False,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--input", "input_", metavar="CID|FILE|DIR",
              help="The input: a CID, or a local file or directory to add first.")
@click.option("--reducers", "-R", type=click.IntRange(1, 100_000), default=None,
              help="Number of reduce tasks, R (default 1).")
@click.option("--local-peers", type=click.IntRange(0, 64), default=0,
              help="Start this many peer processes on 127.0.0.1 for the job.")
@click.option("--local-workers", type=int, default=None,
              help="Worker processes per local peer (default: CPUs / peers).")
@click.option("--bootstrap", multiple=True, metavar="MULTIADDR",
              help="A peer to connect to (repeatable).")
@click.option("--listen", multiple=True, metavar="MULTIADDR",
              help="Master listen address (default /ip4/127.0.0.1/tcp/0).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the parts and manifest to this directory.")
@click.option("--resume", is_flag=True,
              help="Continue this repo's unfinished run of the job (or, with no JOBFILE, "
                   "the newest unfinished job) from its journal.")
@click.option("--peer-timeout", type=float, default=5.0, show_default=True,
              help="Seconds of silence after which a peer counts as dead.")
@click.option("--wait-for-workers", type=float, default=120.0, show_default=True,
              help="Seconds to wait when no worker is available.")
@click.option("--encoding", type=click.Choice(["msgpack", "pickle"]), default="msgpack",
              show_default=True, help="Data encoding between peers.")
@click.option("--verify", type=click.IntRange(1, 9), default=1, show_default=True,
              help="Run every task on this many peers and accept only identical outputs.")
@click.option("--cid-version", type=click.Choice(["0", "1"]), default="0", show_default=True)
@click.option("--psk", envvar="P2PMR_PSK", default=None, metavar="HEX",
              help="Pre-shared key of a private swarm.")
@click.option("--progress/--no-progress", default=True, help="Show progress on stderr.")
@store_options
@click.pass_context
def run(ctx: click.Context, jobfile: Path | None, input_: str | None, reducers: int | None,
        local_peers: int, local_workers: int | None, bootstrap: tuple[str, ...],
        listen: tuple[str, ...], output: Path | None, resume: bool, peer_timeout: float,
        wait_for_workers: float, encoding: str, verify: int, cid_version: str, psk: str | None,
        progress: bool, repo: str | None, ipfs_api: str | None) -> None:
    """Run a MapReduce job and print the output CID on the last line."""
    from .runner import RunSettings, run_job

    settings = _merge(ctx, repo, ipfs_api, bootstrap)
    if jobfile is None and not resume:
        raise click.UsageError("give a JOBFILE, or --resume to continue an unfinished job")
    if jobfile is not None and input_ is None:
        raise click.UsageError("--input is required")
    run_settings = RunSettings(
        repo=settings.repo, ipfs_api=settings.ipfs_api, jobfile=jobfile, input=input_,
        reducers=reducers, local_peers=local_peers, local_workers=local_workers,
        bootstrap=settings.bootstrap, listen=listen or DEFAULT_LISTEN, output=output,
        resume=resume, peer_timeout=peer_timeout, wait_for_workers=wait_for_workers,
        encoding=encoding, verify=verify, cid_version=int(cid_version), psk=psk,
        progress=progress)
    root = run_async(run_job, run_settings)
    click.echo(str(root))


async def _watch_parent(parent: int) -> None:
    """Return when the process that started us is gone (we were re-parented).

    Polled: no event exists for another process's death without a child
    relationship (prctl's parent-death signal is Linux-only and per-thread).
    """
    while os.getppid() == parent:  # noqa: ASYNC110
        await trio.sleep(0.5)
    log.warning("parent process %d is gone; stopping", parent)


async def _until_stop_signal(fn: Callable[[], Awaitable[None]]) -> None:
    """Run ``fn`` until SIGINT or SIGTERM, then shut it down cleanly.

    The receiver is installed before ``fn`` starts, so a signal that arrives
    during start-up, or just after "Ready.", still means a clean stop.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fn)
            async for signum in signals:
                log.info("received %s; stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                return


def _parse_cid(text: str) -> CID:
    try:
        return CID.parse(text)
    except P2PMRError as exc:
        raise click.BadParameter(str(exc), param_hint="CID") from None


if __name__ == "__main__":  # pragma: no cover
    main()
