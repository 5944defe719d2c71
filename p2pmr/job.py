"""Jobs: user code that travels to peers, and the descriptor that names a run.

A job is a Python file (or module, or :class:`Job`) with generator functions

* ``map(key, value)`` yielding ``(key, value)`` pairs, called once per line
  with ``key = (path, offset)`` and ``value`` the line; or instead
  ``map_batch(records)``, called once per split with an iterable of
  ``((path, offset), line)`` records, which is much faster in Python;
* ``reduce(key, values)`` yielding ``(key, value)`` pairs;
* optionally ``combine(key, values)``, run on each map task's output;
* optionally ``partition(key, n_reducers)`` returning the key's reducer, or
  ``partition = TotalOrder()`` for sorted ranges of keys sampled from the
  input (:mod:`p2pmr.partition`); without it, crc32 decides;
* optionally ``RECORD_KEYS = False``: the job never looks at where a line
  lies, so records come with the key ``None``. A split's output then
  depends on its bytes alone, and the memo finds it again after an edit
  elsewhere in its file or a rename: with content-defined leaves, an
  insertion re-maps only the blocks around it.

A job *file* travels as its source: its functions pickle by reference to a
module named after the file's content, which the peer's workers import from
that source once each, so its module-level code runs there and may make
what cannot be pickled (:mod:`p2pmr.jobfile`). Functions of any other
module (``__main__``, a test module) are serialised with cloudpickle *by
value*. Either way the job need not be installed on any peer. The bytes are
stored in IPFS; their CID names the code. The job *descriptor*, a small canonical JSON document that
names the code, the input, R and the options, is stored too, and its CID is
the job's identity: the same job on the same input is the same job CID.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import linecache
import os
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cloudpickle

from .errors import JobError
from .jobfile import (
    JobModule,
    code_globals,
    file_source,
    job_module_of,
    load_module,
    read_globals,
    show_source,
)
from .partition import TotalOrder
from .storage.cid import CID

__all__ = ["Job", "JobDescriptor", "dump_job", "load_job_file", "runtime", "runtime_mismatch",
           "show_sources"]

Pairs = Iterable[tuple[Any, Any]]
T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    """The user's functions. ``map`` or ``map_batch`` and ``reduce`` are required."""

    reduce: Callable[[Any, Iterator[Any]], Pairs]
    map: Callable[[Any, Any], Pairs] | None = None
    map_batch: Callable[[Iterable[tuple[Any, Any]]], Pairs] | None = None
    combine: Callable[[Any, Iterator[Any]], Pairs] | None = None
    name: str = "job"
    # The source files of the code, by the file names its code objects carry,
    # so a peer shows the job's lines in tracebacks without having the files.
    sources: tuple[tuple[str, str], ...] = ()
    # partition(key, n_reducers) -> reducer; a TotalOrder samples ranges.
    partition: Callable[[Any, int], int] | None = None
    record_keys: bool = True  # False: records' keys are None, not (path, offset)
    # The job files whose modules the functions come from, imported on the
    # peer before them (set when the code is pickled, see dump_job).
    modules: tuple[JobModule, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.map is None and self.map_batch is None:
            raise JobError("a job needs a map(key, value) or map_batch(records) function")
        for attr in ("map", "map_batch", "reduce", "combine", "partition"):
            fn = getattr(self, attr)
            if fn is not None and not callable(fn):
                raise JobError(f"job attribute {attr!r} is not callable")
        if not callable(self.reduce):
            raise JobError("a job needs a reduce(key, values) function")

    def __getstate__(self) -> dict[str, Any]:
        # A job without a partitioner pickles as it did before jobs had one:
        # its code CID, and so its output CID, stay what they were. The
        # class attribute (the field's default) stands in when unpickled.
        state = dict(self.__dict__)
        state.pop("modules", None)  # travels ahead of the functions (_JobPickler)
        if state.get("partition") is None:
            state.pop("partition", None)
        if state.get("record_keys", True):
            state.pop("record_keys", None)
        return state

    @classmethod
    def from_object(cls, obj: object, name: str | None = None) -> Job:
        """Build from a module or any object with map/reduce attributes."""
        if isinstance(obj, Job):
            return obj
        reduce_fn = getattr(obj, "reduce", None)
        if reduce_fn is None:
            raise JobError(f"{obj!r} has no reduce function")
        return cls(reduce=reduce_fn, map=getattr(obj, "map", None),
                   map_batch=getattr(obj, "map_batch", None),
                   combine=getattr(obj, "combine", None),
                   partition=getattr(obj, "partition", None),
                   record_keys=bool(getattr(obj, "RECORD_KEYS", True)),
                   name=name or str(getattr(obj, "__name__", "job")))


def load_job_file(path: str | Path) -> Job:
    """Import a job file that need not be on ``sys.path`` or installed anywhere."""
    module = load_module(path)
    # Its text, kept now: the code carries it even if the file is gone by
    # the time the job is pickled, and tracebacks show it.
    return dataclasses.replace(Job.from_object(module, name=Path(path).stem),
                               sources=(file_source(module),))


def _by_value(fn: Callable[..., Any] | None) -> types.ModuleType | None:
    """Make cloudpickle carry the function's module by value, not by name.

    Functions from a job file, a script or any non-installed module must
    arrive with their code; library modules (the standard library,
    site-packages) are left to be imported on the peer. Returns the module
    if it now travels by value.
    """
    if fn is None:
        return None
    module_name = getattr(fn, "__module__", None)
    module = sys.modules.get(module_name or "")
    if module is None or module_name in ("__main__", "builtins"):
        return None
    if job_module_of(fn) is not None:
        return None  # a job file's: it travels as its source, by reference
    file = getattr(module, "__file__", None) or ""
    if module_name in sys.stdlib_module_names or "site-packages" in file:
        return None
    if module_name == "p2pmr" or (module_name or "").startswith("p2pmr."):
        return None
    cloudpickle.register_pickle_by_value(module)
    return module


def _restore_code(ctor: Callable[..., types.CodeType], args: tuple[Any, ...],
                  filename: str) -> types.CodeType:
    """Rebuild a code object under the file name it was pickled with."""
    return ctor(*args).replace(co_filename=filename)


# cloudpickle's own reduction of code objects, which ours wraps.
_CODE_REDUCE: Callable[[types.CodeType], tuple[Any, tuple[Any, ...]]] | None = \
    getattr(cloudpickle.Pickler, "dispatch_table", {}).get(types.CodeType)


class _JobPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle that keeps each code object's file name, and collects sources.

    Remote tracebacks must name the job file and show its lines on every
    cloudpickle release we allow, and cloudpickle 3.1.3 started rewriting
    every pickled ``co_filename`` to ``"<dynamic-code>"``. So the file name
    travels beside the code and is put back when the code is rebuilt. It is
    the file's base name, not its path, so where the file lies does not
    change the bytes (the code CID). The text of every such file is
    collected in :attr:`sources`, for :class:`Job` to carry.
    """

    def __init__(self, file: io.BytesIO, known: dict[str, str]) -> None:
        super().__init__(file, protocol=5)
        self.sources: dict[str, str] = {}
        self._known = known  # sources read when the job was loaded
        self._names: dict[str, str] = {}

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is Job and obj.modules:
            # The job files' modules first: unpickling imports them, and then
            # finds the functions in them by name. Their sources travel once.
            state = obj.__getstate__()
            files = {m.file for m in obj.modules}
            state["sources"] = tuple(s for s in obj.sources if s[0] not in files)
            return _rebuild_job, (obj.modules, state)
        if type(obj) is types.CodeType and _CODE_REDUCE is not None:
            # Renamed first, so no machine path lands in the bytes either.
            name = self._display_name(obj.co_filename)
            ctor, args = _CODE_REDUCE(obj.replace(co_filename=name))
            return _restore_code, (ctor, args, name)
        return super().reducer_override(obj)

    def _display_name(self, filename: str) -> str:
        name = self._names.get(filename)
        if name is not None:
            return name
        name = filename
        if not filename.startswith("<"):
            path = Path(filename)
            name = path.name
            if name in self.sources:  # another file of the same name
                name = f"{path.parent.name}/{path.name}"
            source = self._known.get(name)
            if source is None:
                lines = linecache.getlines(filename)
                if lines:
                    source = "".join(lines)
                elif path.is_file():
                    source = path.read_text(encoding="utf-8", errors="replace")
            if source is not None:
                self.sources[name] = source
        self._names[filename] = name
        return name


def _rebuild_job(modules: tuple[JobModule, ...], state: dict[str, Any]) -> Job:
    """A job file's job, unpickled: its modules are imported by now."""
    job: Job = Job.__new__(Job)
    carried = {*state.get("sources", ()), *((m.file, m.source) for m in modules)}
    job.__dict__.update(state, sources=tuple(sorted(carried)), modules=modules)
    return job


def _pickle(obj: Job) -> tuple[bytes, dict[str, str]]:
    buffer = io.BytesIO()
    pickler = _JobPickler(buffer, dict(obj.sources))
    pickler.dump(obj)
    return buffer.getvalue(), pickler.sources


def _functions(job: Job) -> list[Callable[..., Any]]:
    return [fn for fn in (job.map, job.map_batch, job.reduce, job.combine, job.partition)
            if fn is not None]


def _pickles(value: object) -> Exception | None:
    """Why ``value`` cannot be pickled as job code, or None if it can."""
    try:
        _JobPickler(io.BytesIO(), {}).dump(value)
    except Exception as exc:
        return exc
    return None


def _job_modules(job: Job) -> tuple[JobModule, ...]:
    """The job files the functions come from, with the values of the module
    globals they read that pickle: those travel as the master has them; the
    rest (a lock, a connection) the module's own code makes on the peer."""
    found: dict[str, JobModule] = {}
    for fn in _functions(job):
        module = job_module_of(fn)
        if module is not None and module.name not in found:
            roots = [f for f in _functions(job) if getattr(f, "__module__", "") == module.name]
            values = read_globals(roots, sys.modules[module.name])
            kept = tuple(sorted((k, v) for k, v in values.items() if _pickles(v) is None))
            found[module.name] = dataclasses.replace(module, values=kept)
    return tuple(found[name] for name in sorted(found))


def dump_job(job: Job) -> bytes:
    """The job's code as bytes a peer's worker can load, with its sources.

    The bytes depend on the job's content only (with :data:`STABLE_HASH_ENV`
    set when the job iterates over sets): not on where its file lies, nor on
    which process pickles it.
    """
    known = dict(job.sources)
    for fn in _functions(job):
        module = _by_value(fn)
        if module is not None:
            path = Path(getattr(module, "__file__", None) or "")
            source = known.get(path.name)
            if source is None and path.is_file():
                source = path.read_text(encoding="utf-8", errors="replace")
            if source is not None:
                _stable_class_ids(module, source.encode())
    try:
        job = dataclasses.replace(job, modules=_job_modules(job))
        data, sources = _pickle(job)
        carried = tuple(sorted(sources.items()))
        if carried != job.sources:
            # Pickling found the files the code comes from: carry them too.
            data, _ = _pickle(dataclasses.replace(job, sources=carried))
        return data
    except Exception as exc:
        raise JobError(f"cannot serialise the job's code: {_culprit(job) or repr(exc)}") \
            from exc


def _culprit(job: Job) -> str | None:
    """Which global of which function cannot be pickled, and what to do instead."""
    pending: list[Callable[..., Any]] = _functions(job)
    by_value = {getattr(fn, "__module__", None) for fn in pending}
    seen: set[int] = set()
    while pending:
        fn = pending.pop(0)
        code = getattr(fn, "__code__", None)
        if id(fn) in seen or not isinstance(code, types.CodeType):
            continue
        seen.add(id(fn))
        scope: dict[str, Any] = getattr(fn, "__globals__", {})
        used = [(name, scope[name]) for name in code_globals(code) if name in scope]
        cells = zip(code.co_freevars, getattr(fn, "__closure__", None) or (), strict=False)
        used += [(name, cell.cell_contents) for name, cell in cells]
        for name, value in used:
            if isinstance(value, types.FunctionType) and value.__module__ in by_value:
                pending.append(value)  # a helper: blame what it uses, if anything
            elif not isinstance(value, (type, types.ModuleType)) and \
                    (why := _pickles(value)) is not None:
                return (f"{fn.__qualname__}() in {Path(code.co_filename).name} uses the global "
                        f"{name!r}, a {type(value).__name__}, which cannot be pickled ({why}). "
                        f"Create it inside the function (once per process, on first use), or "
                        f"put the job in a file run with `p2pmr run` (or load_job_file): a job "
                        f"file's module-level code runs on every peer")
    return None


def show_sources(job: Job) -> None:
    """Make this process's tracebacks show the job's source lines, and give a
    job file's module the master's values of its globals.

    The code objects name their files by base name; the lines come from the
    sources the job carries, never from whatever file of that name happens
    to lie on this machine. A worker runs one task at a time, so setting
    them before each task keeps two jobs with a ``job.py`` each apart.
    """
    for name, text in job.sources:
        show_source(name, text)
    for module in job.modules:
        module.restore()


def runtime() -> str:
    """What this process pickles job code for: ``"cpython-3.11 cloudpickle-3.1.3"``.

    Pickled code objects hold bytecode, which only the same Python
    implementation and major.minor version can run.
    """
    version = sys.version_info
    return (f"{sys.implementation.name}-{version.major}.{version.minor} "
            f"cloudpickle-{cloudpickle.__version__}")


def _library_major(tokens: list[str], library: str) -> str | None:
    for token in tokens[1:]:
        name, _, version = token.partition("-")
        if name == library:
            return version.split(".")[0]
    return None


def runtime_mismatch(job_runtime: str, ours: str | None = None) -> str | None:
    """Why code pickled for ``job_runtime`` cannot run here, or None if it can.

    Bytecode needs the same Python implementation and major.minor version;
    cloudpickle's format is kept within a major version, so that must match
    too. Anything else in the tag (cloudpickle's minor version) is
    informative. ``ours`` is this peer's runtime (:func:`runtime`).
    """
    if not job_runtime:
        return None  # unknown: let the worker try
    ours = ours or runtime()
    theirs, mine = job_runtime.split(), ours.split()
    if theirs[0] != mine[0]:
        need = "the same Python version (implementation and major.minor)"
    elif _library_major(theirs, "cloudpickle") != _library_major(mine, "cloudpickle"):
        need = "the same major version of cloudpickle"
    else:
        return None
    return (f"the job's code was pickled for {job_runtime}, and this peer runs {ours}: the "
            f"master and its peers need {need} to share code")


@dataclass(frozen=True)
class JobDescriptor:
    """The canonical description of one job run; its CID is the job's identity."""

    code: CID
    input: CID
    reducers: int
    encoding: str = "msgpack"
    cid_version: int = 0
    name: str = "job"
    boundary_group: int = 128  # which splits each boundary task covers
    split_size: int = 0        # average bytes per split (0: a split per leaf block)
    boundaries: CID | None = None  # sampled range boundaries (a TotalOrder job's)
    record_keys: bool = True   # False: the job sees no (path, offset) keys

    def to_json(self) -> bytes:
        doc = {
            "p2pmr": 1,
            "code": str(self.code),
            "input": str(self.input),
            "reducers": self.reducers,
            "encoding": self.encoding,
            "cid_version": self.cid_version,
            "name": self.name,
            "records": "lines",
            "boundary_group": self.boundary_group,
            "split_size": self.split_size,
        }
        if self.boundaries is not None:  # absent otherwise: other jobs' CIDs stay put
            doc["boundaries"] = str(self.boundaries)
        if not self.record_keys:  # likewise
            doc["record_keys"] = False
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> JobDescriptor:
        try:
            doc = json.loads(data)
            if doc.get("p2pmr") != 1:
                raise JobError("not a p2pmr job descriptor (version 1)")
            return cls(code=CID.parse(doc["code"]), input=CID.parse(doc["input"]),
                       reducers=int(doc["reducers"]), encoding=str(doc["encoding"]),
                       cid_version=int(doc.get("cid_version", 0)), name=str(doc.get("name", "")),
                       boundary_group=int(doc.get("boundary_group", 128)),
                       split_size=int(doc.get("split_size", 0)),
                       boundaries=CID.parse(doc["boundaries"]) if "boundaries" in doc else None,
                       record_keys=bool(doc.get("record_keys", True)))
        except JobError:
            raise
        except Exception as exc:
            raise JobError(f"malformed job descriptor: {exc!r}") from exc


def is_job_like(obj: object) -> bool:
    return isinstance(obj, (Job, types.ModuleType)) or (
        hasattr(obj, "reduce") and (hasattr(obj, "map") or hasattr(obj, "map_batch"))
        and not callable(obj))


# Processes that pickle job code or run it get a fixed string-hash seed: set
# and frozenset iteration order then no longer changes from run to run, so
# the same job file pickles to the same bytes (the same code CID, hence the
# same output CID), and user code that iterates over sets emits the same
# records on every attempt (which `verify` relies on).
STABLE_HASH_ENV = {"PYTHONHASHSEED": "0"}


def _stable_class_ids(module: types.ModuleType, source: bytes) -> None:
    """Name the job module's classes after their code, not at random.

    cloudpickle tags each class it sends by value with a uuid4, which would
    make every pickling of a job file that defines a class different. Tag
    them instead, before cloudpickle first sees them, with a digest of the
    file's source and the class's name: stable across runs and processes,
    and different for different code (a worker reuses classes by this tag).
    """
    impl = getattr(cloudpickle, "cloudpickle", None)
    by_class = getattr(impl, "_DYNAMIC_CLASS_TRACKER_BY_CLASS", None)
    by_id = getattr(impl, "_DYNAMIC_CLASS_TRACKER_BY_ID", None)
    if by_class is None or by_id is None:  # another cloudpickle: keep its ids
        return
    for obj in list(vars(module).values()):
        if isinstance(obj, type) and obj.__module__ == module.__name__ and obj not in by_class:
            tag = hashlib.sha256(source + b"\0" + obj.__qualname__.encode()).hexdigest()[:32]
            by_class[obj] = tag
            by_id[tag] = obj


async def in_fresh_process(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a new process started with :data:`STABLE_HASH_ENV`.

    For the master's dealings with job code (pickling a job file, sampling
    the input for a :class:`~p2pmr.partition.TotalOrder`): its own process
    never executes job code, and a fresh process with a fixed hash seed
    gives the same result every time, as the peers' workers do.
    """
    import trio_parallel  # not in worker processes, which import this module

    saved = {k: os.environ.get(k) for k in STABLE_HASH_ENV}
    os.environ.update(STABLE_HASH_ENV)
    try:
        async with trio_parallel.open_worker_context(
                worker_type=trio_parallel.WorkerType.SPAWN, retire=retire_after_one_job) as ctx:
            result: T = await ctx.run_sync(fn, *args)
            return result
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def retire_after_one_job() -> bool:
    """For a worker pool: a fresh process for every job file pickled (and
    importing only this light module, not libp2p)."""
    return True


def pickle_job_file(path: str) -> tuple[bytes, str, TotalOrder | None, bool]:
    """Load and pickle a job file; meant to run in a fresh worker process (with
    :data:`STABLE_HASH_ENV`), so the master's own process never executes job
    code and the bytes depend only on the file.

    Returns the code, the job's name, its :class:`~p2pmr.partition.TotalOrder`
    if it has one (plain data the master may hold: it says to sample the input)
    and whether its records carry keys (``RECORD_KEYS``).
    """
    job = load_job_file(path)
    order = job.partition if isinstance(job.partition, TotalOrder) else None
    return dump_job(job), job.name, order, job.record_keys
