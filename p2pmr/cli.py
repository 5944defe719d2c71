"""The ``p2pmr`` command line.

Storage commands (add, cat, ls, block get) work on the local repo with no
daemon and no network. Given ``--bootstrap`` they start a node to fetch what
the repo lacks; given ``--ipfs-api`` they use that Kubo daemon instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import trio

from ._worker import WorkerLimits
from .errors import P2PMRError, collapsed
from .master.options import MasterOptions
from .peer.config import PeerConfig
from .settings import DEFAULT_LISTEN, apply, click_options, command_line, default_repo
from .storage import unixfs
from .storage.base import BlockStore
from .storage.cid import CID
from .storage.flatfs import FlatFSStore

if TYPE_CHECKING:
    from .verify import Sample

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
    """Log to stderr at ``level``; py-libp2p's records too, once it is imported.

    libp2p is not imported here: commands that do not use the network (and
    ``--help``) start without it. Commands that do call :func:`_libp2p_logs`
    once it is imported.
    """
    numeric = getattr(logging, level.upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    if not os.environ.get("LIBP2P_DEBUG"):
        # Below DEBUG only py-libp2p's critical records: it logs ERROR for
        # what p2pmr expects and handles itself (a dial to a master that has
        # gone, a peer that reset a connection), and p2pmr reports failures
        # in its own terms.
        handler.addFilter(_Libp2pFilter(logging.WARNING if numeric <= logging.DEBUG
                                        else logging.CRITICAL))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)


def _libp2p_logs() -> None:
    """Route py-libp2p's records through ours, now that it is imported.

    Importing py-libp2p detaches its loggers unless LIBP2P_DEBUG is set, so
    this must come after that import; its records are then formatted and
    filtered like everything else.
    """
    if "libp2p" in sys.modules and not os.environ.get("LIBP2P_DEBUG"):
        logging.getLogger("libp2p").propagate = True


class _Stopped(Exception):
    """SIGINT or SIGTERM arrived, and the command shut down cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


async def _stop_on_signal(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``fn``; on SIGINT or SIGTERM cancel it, let it clean up, and raise _Stopped.

    SIGTERM is what ``kill``, ``timeout``, CI cancellation and ``docker stop``
    send, so it must shut down as cleanly as Ctrl-C: local peers stopped,
    temporary directories removed, the journal closed. The receiver is
    installed before ``fn`` starts, so a signal during start-up counts too. A
    second signal while it cleans up ends the process at once (local peers
    still stop: they watch this process).
    """
    result: list[T] = []
    stopped: int | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            work = trio.CancelScope()

            async def watch() -> None:
                nonlocal stopped
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if stopped is None:
                        log.info("received %s; stopping", name)
                        stopped = signum
                        work.cancel()
                    else:
                        click.echo(f"received {name} again: stopping at once", err=True)
                        os._exit(128 + signum)

            nursery.start_soon(watch)
            with work:
                result.append(await fn(*args))
            nursery.cancel_scope.cancel()
    if stopped is not None and not result:
        raise _Stopped(stopped)
    return result[0]


def run_async(fn: Callable[..., Awaitable[T]], *args: Any, on_stop: str | None = "") -> T:
    """Run a coroutine function under trio, turning our errors into exit status 1.

    SIGINT and SIGTERM stop it cleanly; then ``on_stop`` is printed (after
    "interrupted") and the exit status is 128 + the signal's number, as a
    shell reports it. With ``on_stop=None`` a signal is a normal, silent end.
    """
    _libp2p_logs()
    try:
        with collapsed():
            result: T = trio.run(_stop_on_signal, fn, *args)
            return result
    except P2PMRError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    except _Stopped as stop:
        if on_stop is None:
            raise SystemExit(0) from None
        click.echo(f"interrupted ({stop}){': ' + on_stop if on_stop else ''}", err=True)
        raise SystemExit(128 + stop.signum) from None
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


def _listen_option(text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    listen = click.option("--listen", multiple=True, metavar="MULTIADDR",
                          help=f"{text} Default {' '.join(DEFAULT_LISTEN)}.")
    announce = click.option(
        "--announce", multiple=True, metavar="MULTIADDR",
        help="Advertise this address instead of the listen addresses (repeatable): "
             "behind NAT or a port mapping, the address other machines must dial.")
    return lambda fn: listen(announce(fn))


_psk_option = click.option(
    "--psk", envvar="P2PMR_PSK", default=None, metavar="HEX",
    help="Pre-shared key of a private swarm: only peers holding it can connect "
         "(64 hex digits).")


@contextlib.asynccontextmanager
async def open_store(settings: Settings, *, network: bool = False,
                     timeout: float = 60.0) -> AsyncIterator[BlockStore]:
    """The block store a storage command works on.

    Offline (no bootstrap) the local repo is used directly, without taking
    the repo lock, so these commands work while a peer runs on the same repo.
    """
    if settings.ipfs_api:
        from .storage.kubo import KuboStore

        yield await KuboStore.connect(settings.ipfs_api, timeout=timeout)
        return
    if network and settings.bootstrap:
        from .node import open_node
        from .storage.embedded import EmbeddedStore

        _libp2p_logs()

        async with open_node(settings.repo, bootstrap=settings.bootstrap) as node:
            assert isinstance(node.blocks, EmbeddedStore)  # no --ipfs-api: the embedded store
            node.blocks.default_timeout = timeout
            yield node.blocks
        return
    await trio.Path(settings.repo).mkdir(parents=True, exist_ok=True)
    yield FlatFSStore(settings.repo)


_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)
_LEVEL_ENV = "P2PMR_LOG_LEVEL"


def _set_log_level(ctx: click.Context, param: click.Parameter, level: str | None) -> None:
    """Apply ``--log-level`` as soon as it is parsed, wherever it was given.

    Eager, so that it holds while the other options are processed. A level
    given on the command line is also exported as ``P2PMR_LOG_LEVEL``: the
    processes a command starts (``--local-peers``) log at it too, and
    ``p2pmr peer`` knows that a level was chosen.
    """
    if level is None:  # not given after this subcommand: the group's level stands
        return
    assert param.name is not None
    if ctx.get_parameter_source(param.name) is click.core.ParameterSource.COMMANDLINE:
        os.environ[_LEVEL_ENV] = level.upper()
    configure_logging(level)


def _log_level_option(default: str | None) -> click.Option:
    return click.Option(
        ["--log-level"], type=_LEVELS, metavar="LEVEL", default=default,
        envvar=_LEVEL_ENV if default else None, show_default=bool(default),
        show_envvar=bool(default), is_eager=True, expose_value=False, callback=_set_log_level,
        help="DEBUG, INFO, WARNING or ERROR (before or after the subcommand).")


class _Command(click.Command):
    """A subcommand that takes ``--log-level`` after its name too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_log_level_option(None))


class _Group(click.Group):
    """A group whose subcommands and subgroups all take ``--log-level``."""

    command_class = _Command
    group_class = type  # subgroups are _Groups, so their commands are _Commands

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not any(p.name == "log_level" for p in self.params):
            self.params.append(_log_level_option(None))


@click.group(cls=_Group, params=[_log_level_option("WARNING")],
             context_settings={"help_option_names": ["-h", "--help"]})
@store_options
@click.version_option(package_name="p2pmr")
@click.pass_context
def main(ctx: click.Context, repo: str | None, ipfs_api: str | None) -> None:
    """Peer-to-peer, content-addressed MapReduce over IPFS."""
    ctx.obj = Settings(Path(repo) if repo else default_repo(), ipfs_api, ())


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("-r", "--recursive", is_flag=True, help="Add a directory tree.")
@click.option("--cid-version", type=click.Choice(["0", "1"]), default="0", show_default=True)
@click.option("--raw-leaves", is_flag=True, default=None,
              help="Store leaves as raw blocks (default for CIDv1).")
@click.option("--chunker", default=f"size-{unixfs.DEFAULT_CHUNK_SIZE}", show_default=True,
              help="size-N (fixed N-byte leaves) or buzhash (leaves cut by content, "
                   "as Kubo's: an edit changes only the leaves around it).")
@click.option("--hidden", is_flag=True, help="Include files whose names start with '.'.")
@click.option("--pin/--no-pin", default=True, show_default=True,
              help="Pin what is added, so that `p2pmr repo gc` keeps it.")
@store_options
@click.pass_context
def add(ctx: click.Context, path: Path, recursive: bool, cid_version: str,
        raw_leaves: bool | None, chunker: str, hidden: bool, pin: bool, repo: str | None,
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
            root = await unixfs.add_path(store, path, options, hidden=hidden)
            if pin:
                await store.pin(root, recursive=True)
            return root

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
@click.option("--json", "as_json", is_flag=True,
              help='Print {"peer_id": ID, "addrs": [...], "pid": PID or null} instead.')
@store_options
@click.pass_context
def id_cmd(ctx: click.Context, as_json: bool, repo: str | None, ipfs_api: str | None) -> None:
    """Print this repo's peer ID (creating the identity on first use), and the
    addresses of the node running on the repo, if one is, a line each."""
    from .node import load_or_create_identity, peer_id_of
    from .repo import running_node

    settings = _merge(ctx, repo, ipfs_api)
    settings.repo.mkdir(parents=True, exist_ok=True)
    peer_id = peer_id_of(load_or_create_identity(settings.repo))
    node = running_node(settings.repo)
    if node is not None and node.peer_id != peer_id:  # the key was replaced under it
        log.warning("the node running on %s (pid %d) is %s, not this repo's %s",
                    settings.repo, node.pid, node.peer_id, peer_id)
    addrs = list(node.addrs) if node is not None else []
    if as_json:
        click.echo(json.dumps({"peer_id": peer_id, "addrs": addrs,
                               "pid": node.pid if node is not None else None}))
        return
    click.echo(peer_id)
    for addr in addrs:
        click.echo(addr)


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


@main.group(name="repo")
def repo_group() -> None:
    """Look after a repo's blocks."""


@repo_group.command(name="verify")
@click.option("--set-aside", is_flag=True,
              help="Move corrupt blocks into the repo's corrupt/ directory, so they count as "
                   "missing and are fetched again when next needed.")
@store_options
@click.pass_context
def repo_verify(ctx: click.Context, set_aside: bool, repo: str | None,
                ipfs_api: str | None) -> None:
    """Check every block in the repo against its CID; list the corrupt ones.

    Exits with status 1 if any block is corrupt. Every read checks blocks
    anyway; this finds damage before a job trips on it.
    """
    from tqdm import tqdm

    from .storage.flatfs import FlatFS

    settings = _merge(ctx, repo, ipfs_api)
    if settings.ipfs_api:
        raise click.UsageError("repo verify checks a p2pmr repo; for a Kubo daemon use "
                               "`ipfs repo verify`")
    fs = FlatFS(settings.repo)
    if not fs.blocks.is_dir():
        raise click.UsageError(f"{settings.repo} has no blocks/ directory: not a p2pmr repo")
    checked = corrupt = 0
    for cid, path, intact in tqdm(fs.scan(), desc="verify", unit="block", file=sys.stderr,
                                  disable=not sys.stderr.isatty(), leave=False):
        checked += 1
        if intact:
            continue
        corrupt += 1
        where = str(path)
        if set_aside:
            moved = fs.set_aside(cid, path)
            where += f" (moved to {moved.moved_to})" if moved else " (replaced meanwhile)"
        click.echo(f"corrupt {cid} {where}")
    click.echo(f"{checked} block(s) checked, {corrupt} corrupt", err=True)
    if corrupt:
        if not set_aside:
            click.echo("rerun with --set-aside to move them out of the store; they are "
                       "fetched again from peers when next needed", err=True)
        raise SystemExit(1)


@repo_group.command(name="gc")
@click.option("--memo-max-age", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="Drop memo entries older than this many days.")
@click.option("--memo-max-size", type=click.FloatRange(min=0), default=None, metavar="MIB",
              help="Keep the newest memo entries whose outputs fit in this many MiB; drop "
                   "the rest.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@store_options
@click.pass_context
def repo_gc(ctx: click.Context, memo_max_age: float | None, memo_max_size: float | None,
            dry_run: bool, repo: str | None, ipfs_api: str | None) -> None:
    """Remove blocks that nothing needs.

    Kept: every pinned DAG (outputs, added files and inputs), everything an
    unfinished job needs to resume, and what the memo names. Memo entries
    beyond --memo-max-age or --memo-max-size are dropped first, with any
    output kept for them alone. Everything else (fetched copies, finished
    jobs' intermediates) is removed. The repo must not be in use by a node.
    """
    from .repo import collect, describe

    settings = _merge(ctx, repo, ipfs_api)
    if settings.ipfs_api:
        raise click.UsageError("repo gc collects a p2pmr repo; for a Kubo daemon use "
                               "`ipfs repo gc`")
    try:
        result = collect(settings.repo, dry_run=dry_run,
                         memo_max_age=None if memo_max_age is None else memo_max_age * 86400,
                         memo_max_bytes=None if memo_max_size is None
                         else int(memo_max_size * 2**20))
    except P2PMRError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(describe(result, dry_run))


def _peer_ids(ctx: click.Context, param: click.Parameter,
              values: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse anything that is not a peer ID, at once, naming it."""
    from libp2p.peer.id import ID as PeerID

    for value in values:
        try:
            peer_id = PeerID.from_base58(value)
            ok = str(peer_id) == value and len(peer_id.to_bytes()) >= 34
        except Exception:
            ok = False
        if not ok:
            raise click.BadParameter(
                f"{value!r} is not a peer ID (it looks like 12D3KooW… or Qm…; "
                f"`p2pmr id --repo MASTER_REPO` prints the master's)")
    return values


@main.command()
@_listen_option("Listen address (repeatable). Use /ip4/0.0.0.0/tcp/PORT to accept peers "
                "from other machines.")
@click.option("--bootstrap", multiple=True, metavar="MULTIADDR",
              help="Peer to connect to and stay connected to (repeatable).")
@click.option("--trust", multiple=True, metavar="PEER_ID", callback=_peer_ids,
              help="A master allowed to run jobs here (repeatable); also read from "
                   "the repo's trusted_masters file.")
@click.option("--trust-any", is_flag=True,
              help="Run jobs from ANY master. Only for closed test swarms.")
@click_options(PeerConfig, ["workers", "allow_pickle", "task_wall_seconds", "fetch_timeout",
                            "max_input_size", "read_stores"])
@click_options(WorkerLimits)
@_psk_option
@click.option("--exit-with-parent", is_flag=True, hidden=True,
              help="Stop when the parent process dies (used by --local-peers).")
@click.option("--master-from-stdin", is_flag=True, hidden=True,
              help="Trust and dial the master named by the first line on stdin, "
                   '{"addr": MULTIADDR, "peer_id": ID} (used by --local-peers, which '
                   "starts its peers before its own node is up).")
@click.option("--remove-repo", is_flag=True, hidden=True,
              help="Delete the repo when stopping: it was made for this run alone "
                   "(used by --local-peers, so that not even a killed master leaves it).")
@store_options
@click.pass_context
def peer(ctx: click.Context, /, listen: tuple[str, ...], announce: tuple[str, ...],
         bootstrap: tuple[str, ...],
         trust: tuple[str, ...], trust_any: bool, psk: str | None, exit_with_parent: bool,
         master_from_stdin: bool, remove_repo: bool, repo: str | None, ipfs_api: str | None,
         **given: Any) -> None:
    """Run a peer that executes tasks for trusted masters, until SIGINT or SIGTERM."""
    from .node import open_node
    from .peer import register_protocol
    from .ready import announce_ready

    settings = _merge(ctx, repo, ipfs_api, bootstrap)
    config = apply(PeerConfig, given, PeerConfig(limits=apply(WorkerLimits, given)))
    if not exit_with_parent and not master_from_stdin and _LEVEL_ENV not in os.environ:
        # Whoever runs a peer by hand sees a line per task it runs (a job's
        # own local peers stay quiet in their master's terminal).
        logging.getLogger("p2pmr.peer.tasks").setLevel(logging.INFO)
    if trust_any:
        click.echo("WARNING: --trust-any: any peer that can reach this one can run arbitrary "
                   "code on this machine. Use it only in a closed test swarm.", err=True)

    async def serve() -> None:
        async with open_node(settings.repo, listen=listen or DEFAULT_LISTEN, announce=announce,
                             bootstrap=settings.bootstrap, ipfs_api=settings.ipfs_api,
                             psk=psk) as node:
            service = register_protocol(node, trust=trust, trust_any=trust_any, config=config,
                                        master_later=master_from_stdin)
            announce_ready(node, service)

            def master(line: str) -> None:
                try:
                    doc = json.loads(line)
                    addr, peer_id = str(doc["addr"]), str(doc["peer_id"])
                except (ValueError, KeyError, TypeError):
                    log.error("not a master's address on stdin: %r", line[:200])
                    return
                service.trust.add(peer_id)
                node.spawn(node.keep_connected, addr)
                log.info("trusting and dialling the master %s", peer_id)

            if exit_with_parent or master_from_stdin:
                await _watch_parent(parent, master if master_from_stdin else None)
            else:
                await trio.sleep_forever()

    parent = os.getppid()
    try:
        run_async(serve, on_stop=None)
    finally:
        if remove_repo:
            shutil.rmtree(settings.repo, ignore_errors=True)
            with contextlib.suppress(OSError):  # the swarm's directory, once empty
                settings.repo.parent.rmdir()


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
@_listen_option("Master listen address (repeatable).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the parts and manifest to this directory. A previous "
                   "output there is replaced whole; any other non-empty directory is "
                   "refused unless --overwrite.")
@click.option("--overwrite", is_flag=True,
              help="Let --output replace a non-empty directory that is not a p2pmr output.")
@click.option("--resume", is_flag=True,
              help="Continue this repo's unfinished run of the job (or, with no JOBFILE, "
                   "the newest unfinished job) from its journal.")
@click.option("--reuse", "reuse", multiple=True, metavar="CID",
              help="Take tasks from an earlier output's provenance record, given as the "
                   "output's CID or its master's attestation CID (repeatable). Unless the "
                   "attestation is signed by a --trust-master, a sample of its tasks is run "
                   "again first, and one mismatch refuses it.")
@click.option("--trust-master", "trust_masters", multiple=True, metavar="PEER_ID",
              callback=lambda ctx, param, v: _peer_ids(ctx, param, v) if v else v,
              help="Take --reuse records signed by this master without checking them "
                   "(repeatable; this repo's own key is always trusted).")
@click.option("--reuse-sample", metavar="N|P%", default=None,
              help="Tasks of an untrusted --reuse record to run again before taking it "
                   "(default 5%, at least 3; 100% checks all).")
@click_options(MasterOptions)
@_psk_option
@click.option("--progress/--no-progress", default=True, help="Show progress on stderr.")
@click.option("--events", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append one JSON line per task and peer event to this file: assigned, "
                   "running, completed, failed, reused; peers joined, lost, excluded.")
@click.option("--dashboard", metavar="HOST:PORT", default=None,
              help="Serve a live dashboard of the job here (e.g. 127.0.0.1:8787; port 0 "
                   "picks one). Read-only, but anyone who can reach it sees the job.")
@click_options(WorkerLimits)
@click_options(PeerConfig, ["task_wall_seconds", "max_input_size"])
@store_options
@click.pass_context
def run(ctx: click.Context, /, jobfile: Path | None, input_: str | None, reducers: int | None,
        local_peers: int, local_workers: int | None, bootstrap: tuple[str, ...],
        listen: tuple[str, ...], announce: tuple[str, ...], output: Path | None,
        overwrite: bool, resume: bool,
        reuse: tuple[str, ...], trust_masters: tuple[str, ...], reuse_sample: str | None,
        psk: str | None, progress: bool, events: Path | None, dashboard: str | None,
        repo: str | None, ipfs_api: str | None, **given: Any) -> None:
    """Run a MapReduce job and print the output CID on the last line.

    JOBFILE is a Python file that defines:

    \b
      map(key, line)        yields (key, value) pairs; key is (path, offset)
      map_batch(records)    or, instead of map: called once per split with
                            ((path, offset), line) records; yields pairs
      reduce(key, values)   yields (key, value) pairs: key<TAB>value lines
      combine(key, values)  optional: runs on each map task's output
      partition(key, n)     optional: returns the key's reducer, 0 to n-1;
                            or partition = TotalOrder() for sorted output
      RECORD_KEYS = False   optional: map's key is None, not (path, offset)

    \b
    Example:  def map(key, line): yield from ((w, 1) for w in line.split())
              def reduce(word, ones): yield word, sum(ones)

    Keys and values travel as msgpack (str, bytes, int, float, bool, None,
    list, tuple, dict) unless --encoding pickle.
    """
    from .output import check_output_dir
    from .runner import RunSettings, run_job

    settings = _merge(ctx, repo, ipfs_api, bootstrap)
    if _LEVEL_ENV not in os.environ:
        # The master says which peers join, are lost or are excluded.
        logging.getLogger("p2pmr.master.liveness").setLevel(logging.INFO)
    if jobfile is None and not resume:
        raise click.UsageError("give a JOBFILE, or --resume to continue an unfinished job")
    if jobfile is not None and input_ is None:
        raise click.UsageError("--input is required")
    limits = command_line(WorkerLimits, given) + command_line(PeerConfig, given)
    if limits and not local_peers:
        raise click.UsageError("--max-task-memory, --max-task-cpu, --max-task-time and "
                               "--max-task-input apply to --local-peers; other peers set "
                               "their own (`p2pmr peer --max-task-memory ...`)")
    if output is not None:
        try:
            check_output_dir(output, overwrite=overwrite)
        except P2PMRError as exc:
            raise click.BadParameter(str(exc), param_hint="--output") from None
    run_settings = RunSettings(
        repo=settings.repo, ipfs_api=settings.ipfs_api, jobfile=jobfile, input=input_,
        reducers=reducers, local_peers=local_peers, local_workers=local_workers,
        local_peer_args=tuple(limits), bootstrap=settings.bootstrap,
        listen=listen or DEFAULT_LISTEN, announce=announce, output=output,
        overwrite=overwrite, resume=resume,
        master=apply(MasterOptions, given), psk=psk, progress=progress,
        reuse=tuple(_parse_cid(c) for c in reuse), trust_masters=trust_masters,
        reuse_sample=_sample_option(reuse_sample, "--reuse-sample"), events=events,
        dashboard=dashboard)
    root = run_async(functools.partial(run_job, imported=_libp2p_logs), run_settings,
                     on_stop="the tasks completed so far are in the journal; run the same "
                             "command with --resume to continue from there")
    click.echo(str(root))


@main.command()
@click.argument("output_cid")
@click.option("--all", "all_tasks", is_flag=True,
              help="Run every task again (the default).")
@click.option("--sample", metavar="N|P%",
              help="Run N tasks again, or P percent of them, drawn at random from the map "
                   "and reduce tasks.")
@click.option("--seed", type=int, default=None,
              help="Draw the sample with this seed, to repeat a check.")
@click.option("--local-peers", type=click.IntRange(0, 64), default=None,
              help="Run the tasks on this many peer processes on 127.0.0.1 (default 2, "
                   "or 0 with --bootstrap).")
@click.option("--local-workers", type=int, default=None,
              help="Worker processes per local peer (default: CPUs / peers).")
@click.option("--bootstrap", multiple=True, metavar="MULTIADDR",
              help="Run the tasks on the peers of this swarm, and fetch from it what "
                   "the repo lacks (repeatable).")
@_listen_option("Listen address of the checking master (repeatable).")
@click.option("--attestation", metavar="CID",
              help="The master's signed attestation of the output (its run prints it): "
                   "checked, and used to name the peer that produced each task.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@_psk_option
@store_options
@click.pass_context
def verify(ctx: click.Context, /, output_cid: str, all_tasks: bool, sample: str | None,
           seed: int | None, local_peers: int | None, local_workers: int | None,
           bootstrap: tuple[str, ...], listen: tuple[str, ...], announce: tuple[str, ...],
           attestation: str | None,
           as_json: bool, psk: str | None, repo: str | None, ipfs_api: str | None) -> None:
    """Check a job's output by running its tasks again; exit 0 if all match.

    The output's provenance record names every task's inputs and outputs.
    The chosen tasks run again (the job's code runs: verify where you would
    run the job) and each output is compared with the record; the report
    names each task that differs. Blocks are read from the repo in place
    (read only), and fetched from --bootstrap peers when missing.
    """
    from .runner import RunSettings
    from .verify import Sample, verify_output

    if all_tasks and sample is not None:
        raise click.UsageError("give --all or --sample, not both")
    settings = _merge(ctx, repo, ipfs_api, bootstrap)
    chosen = _sample_option(sample, "--sample", seed) or Sample()
    peers = local_peers if local_peers is not None else (0 if settings.bootstrap else 2)
    if not peers and not settings.bootstrap:
        raise click.UsageError("--local-peers 0 needs --bootstrap: some peer must run tasks")
    read = (settings.repo,) if (settings.repo / "blocks").is_dir() else ()
    with tempfile.TemporaryDirectory(prefix="p2pmr-verify-") as scratch:
        run_settings = RunSettings(
            repo=Path(scratch) / "repo", ipfs_api=settings.ipfs_api, jobfile=None,
            input=None, reducers=None, local_peers=peers, local_workers=local_workers,
            bootstrap=settings.bootstrap, listen=listen or DEFAULT_LISTEN, announce=announce,
            psk=psk, progress=False)
        verdict = run_async(functools.partial(
            verify_output, read_repos=read, imported=_libp2p_logs,
            attestation=_parse_cid(attestation) if attestation else None),
                            run_settings, _parse_cid(output_cid), chosen)
    if as_json:
        click.echo(json.dumps(verdict.as_json()))
    else:
        for mismatch in verdict.mismatches:
            click.echo(f"MISMATCH {mismatch}")
        if verdict.attested_by:
            click.echo(f"attested by master {verdict.attested_by} (signature checked)")
        click.echo(f"{verdict.output}: {verdict.checked} of {verdict.tasks} task(s) run "
                   f"again; " + ("every one matches its record" if verdict.ok else
                                 f"{len(verdict.mismatches)} mismatch(es)"))
    raise SystemExit(0 if verdict.ok else 1)


_job_argument = click.argument("job", required=False, metavar="[JOB]")


@main.command()
@_job_argument
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
@click.option("--watch", is_flag=True,
              help="Keep showing it until the job ends (with --json: one line per change).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between updates with --watch.")
@store_options
@click.pass_context
def status(ctx: click.Context, /, job: str | None, as_json: bool, watch: bool, interval: float,
           repo: str | None, ipfs_api: str | None) -> None:
    """Show a job of this repo: live from its master while it runs, else from its files.

    JOB is a job CID (or its start) under the repo's jobs/; without it, the
    job a running master has, else the newest. Shows phase progress, each
    peer's tasks, recent failures with their tracebacks, throughput and the
    time left, or, for a job no master runs, what was done and how to resume.
    """
    from .dashboard.client import show_status

    settings = _merge(ctx, repo, ipfs_api)
    run_async(functools.partial(show_status, settings.repo, job, as_json=as_json, watch=watch,
                                interval=interval, echo=click.echo,
                                clear=sys.stdout.isatty()), on_stop=None)


@main.command()
@_job_argument
@click.option("--bind", metavar="HOST:PORT", default="127.0.0.1:8787", show_default=True,
              help="Where to serve the page (port 0 picks a free one).")
@store_options
@click.pass_context
def dashboard(ctx: click.Context, /, job: str | None, bind: str, repo: str | None,
              ipfs_api: str | None) -> None:
    """Serve the dashboard of a job of this repo, running or finished, until stopped.

    A running job is followed live through its master's socket; a finished
    or interrupted one is shown from its journal, events and report.
    """
    from .dashboard.client import status_source
    from .dashboard.serve import serving

    settings = _merge(ctx, repo, ipfs_api)

    async def go() -> None:
        source = await status_source(settings.repo, job)
        async with serving(source, settings.repo, dashboard=bind, local=False) as served:
            click.echo(f"dashboard: {served.dashboard}/", err=True)
            await trio.sleep_forever()

    run_async(go, on_stop=None)


async def _watch_parent(parent: int, first_line: Callable[[str], None] | None = None
                        ) -> None:
    """Return when the process that started us is gone.

    A parent that gave us a pipe as stdin (``--local-peers`` does) is gone
    when that pipe reads end-of-file: the kernel closes the parent's end as
    it dies, however it dies. Otherwise (or as well) the parent is polled:
    once we are re-parented, it is gone. The first line the parent writes
    on the pipe, if any, goes to ``first_line``.
    """
    async with trio.open_nursery() as nursery:
        if stat.S_ISFIFO(os.fstat(0).st_mode):
            nursery.start_soon(_until_stdin_closes, nursery.cancel_scope, first_line)
        while os.getppid() == parent:  # noqa: ASYNC110
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
        log.warning("parent process %d is gone; stopping", parent)


async def _until_stdin_closes(scope: trio.CancelScope,
                              first_line: Callable[[str], None] | None) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buffer = b""
    async with stdin:
        while chunk := await stdin.receive_some(4096):
            if first_line is not None:
                buffer += chunk
                if b"\n" in buffer:
                    first_line(buffer.split(b"\n", 1)[0].decode(errors="replace"))
                    first_line, buffer = None, b""
    # Also how a parent that is still alive says "stop" (after its SIGTERM).
    log.info("the parent process closed its pipe to this peer; stopping")
    scope.cancel()


def _sample_option(text: str | None, name: str, seed: int | None = None) -> Sample | None:
    from .verify import Sample

    if text is None:
        return None
    try:
        return Sample.parse(text, seed)
    except P2PMRError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def _parse_cid(text: str) -> CID:
    try:
        return CID.parse(text)
    except P2PMRError as exc:
        raise click.BadParameter(str(exc), param_hint="CID") from None


if __name__ == "__main__":  # pragma: no cover
    main()
