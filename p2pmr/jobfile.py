"""A job file's module, as it travels: its source, imported once per process.

A job *file* is not pickled by value. Its functions and classes pickle by
reference to a module named after the file's content (``p2pmr_job_<hash>``),
and the file's text travels with the code (:class:`JobModule`). Unpickling
the code imports that module from the text first, once per process, so the
file's module-level code runs in every worker: what it makes there (a
``random.SystemRandom()``, a lock, an open file, a database connection)
never has to be pickled. The module globals the job's functions read and
that do pickle travel too, as the master had them, and replace the worker's
own before each task: a setting read from the master's environment at import
(``examples/grep.py``) holds on every peer.

The module's name comes from the file's base name and text, never from its
path, so the same file anywhere pickles to the same bytes (the same code
CID), and a peer can check that the text it imports is the text named.
"""

from __future__ import annotations

import hashlib
import importlib.util
import linecache
import os
import sys
import traceback
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import JobError

__all__ = ["JobModule", "code_globals", "file_source", "import_job_module", "job_module_of",
           "load_module", "read_globals", "show_source", "user_traceback"]

PREFIX = "p2pmr_job_"
_MARK = "__p2pmr_job_module__"  # on a module made from a job file: its (file, source)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def module_name(file: str, source: str) -> str:
    """The module a job file's code lives in: named by its content, never its path."""
    digest = hashlib.sha256(file.encode() + b"\0" + source.encode()).hexdigest()
    return f"{PREFIX}{digest[:32]}"


@dataclass(frozen=True)
class JobModule:
    """A job file's module as it travels: its base name, its text, and the
    values of the globals the job reads that pickle (the others are made by
    the module's own code, on the peer)."""

    name: str
    file: str
    source: str
    values: tuple[tuple[str, Any], ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        # The module is imported when this is unpickled, before anything
        # after it in the stream (the job's functions, by reference); the
        # values, which may be instances of its classes, come after that.
        return _imported, (self.name, self.file, self.source), {"values": self.values}

    def restore(self) -> None:
        """Put the master's values back into the module, before a task runs.

        One worker may run two jobs of the same file whose globals differ
        (read from the master's environment, say), and a task may rebind
        them: each task starts from its own job's values.
        """
        module = sys.modules.get(self.name)
        if module is None or not module.__dict__.get(_MARK):
            module = import_job_module(self.name, self.file, self.source)
        module.__dict__.update(self.values)


def _imported(name: str, file: str, source: str) -> JobModule:
    import_job_module(name, file, source)
    return JobModule(name, file, source)


def show_source(file: str, source: str) -> None:
    """Make this process's tracebacks show ``source`` as the lines of ``file``.

    No modification time: ``linecache.checkcache()`` leaves the entry alone,
    and no file of that name that happens to lie here is read instead.
    """
    linecache.cache[file] = (len(source), None, source.splitlines(keepends=True), file)


def import_job_module(name: str, file: str, source: str) -> types.ModuleType:
    """The job file's module in this process, imported from its text once.

    The name must be the one the text gives: code that names another module
    (``os``, say) cannot make a worker shadow it.
    """
    if name != module_name(file, source):
        raise JobError(f"the job module {name!r} does not match the source of {file!r} "
                       f"that comes with it")
    module = sys.modules.get(name)
    if module is not None and module.__dict__.get(_MARK):
        return module
    return _execute(name, file, source, compile(source, file, "exec"))


def _execute(name: str, file: str, source: str, code: types.CodeType) -> types.ModuleType:
    module = types.ModuleType(name)
    # The base name, as the code objects name it: the same on every machine.
    module.__file__ = file
    module.__dict__[_MARK] = (file, source)
    show_source(file, source)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_module(path: str | Path) -> types.ModuleType:
    """Import a job file that need not be on ``sys.path`` or installed anywhere.

    Every call runs the file anew (tests load one file under different
    environments). Errors read as Python's own, on the file as named: a
    syntax error with its line and caret, an exception with the file's
    frames (not p2pmr's).
    """
    file = Path(path)
    if not file.is_file():
        raise JobError(f"job file not found: {path}")
    try:
        source = importlib.util.decode_source(file.read_bytes())
        code = compile(source, file.name, "exec")
    except SyntaxError as exc:
        exc.filename = str(path)
        detail = "".join(traceback.format_exception_only(exc))
        raise JobError(f"job file {path} is not valid Python:\n{detail.rstrip()}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise JobError(f"job file {path} is not Python source: {exc}") from None
    try:
        return _execute(module_name(file.name, source), file.name, source, code)
    except Exception as exc:
        shown = user_traceback(exc).replace(f'File "{file.name}"', f'File "{path}"')
        raise JobError(f"job file {path} failed to import:\n{shown.rstrip()}") from exc


def user_traceback(exc: BaseException, *, user_only: bool = False) -> str:
    """The traceback a user reads: their frames, without p2pmr's plumbing.

    Frames of this package (the worker loop, grouping, encoding, loading)
    and of the import machinery say nothing about the user's bug; frames of
    libraries the job calls stay. If the error arose in p2pmr itself (a map
    that yields no pairs, say), the full stack is kept, unless
    ``user_only``: then there is nothing to show.
    """
    summary = traceback.TracebackException.from_exception(exc)
    frames = [f for f in summary.stack if not f.filename.startswith(_PACKAGE_DIR)
              and not f.filename.startswith("<frozen importlib")]
    if frames:
        summary.stack = traceback.StackSummary.from_list(frames)
    elif user_only:
        return ""
    return "".join(summary.format())


def file_source(module: types.ModuleType) -> tuple[str, str]:
    """The base name and text of the job file ``module`` was made from."""
    mark: tuple[str, str] = module.__dict__[_MARK]
    return mark


def job_module_of(obj: object) -> JobModule | None:
    """The job file module ``obj`` (a function or class) was defined in, if any."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    mark = module.__dict__.get(_MARK) if module is not None else None
    if module is None or mark is None:
        return None
    file, source = mark
    return JobModule(module.__name__, file, source)


def code_globals(code: types.CodeType) -> Iterator[str]:
    """The global names a code object (and the code nested in it) may read."""
    seen: set[str] = set()
    pending = [code]
    while pending:
        current = pending.pop()
        for name in current.co_names:
            if name not in seen:
                seen.add(name)
                yield name
        pending.extend(c for c in current.co_consts if isinstance(c, types.CodeType))


def read_globals(roots: Iterable[object], module: types.ModuleType) -> dict[str, Any]:
    """The module's globals that ``roots`` read, through the module's own
    functions and classes: the values the job's code depends on."""
    found: dict[str, Any] = {}
    seen: set[int] = set()
    pending = list(roots)
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, type):
            pending.extend(vars(obj).values())
            continue
        code = getattr(getattr(obj, "__func__", obj), "__code__", None)
        if not isinstance(code, types.CodeType):
            continue
        for name in code_globals(code):
            if name in module.__dict__ and name not in found:
                value = module.__dict__[name]
                if getattr(value, "__module__", None) == module.__name__ and \
                        isinstance(value, (type, types.FunctionType)):
                    pending.append(value)  # the module's own: its import makes it
                elif not isinstance(value, types.ModuleType):
                    found[name] = value
    return found
