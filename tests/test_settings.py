"""Each setting is defined once: the command line reads its flag, help and
default from the dataclass the library uses."""

from __future__ import annotations

import re

from p2pmr._worker import WorkerLimits
from p2pmr.master.options import MasterOptions
from p2pmr.peer.config import PeerConfig
from p2pmr.settings import apply, command_line

from .helpers import run_cli


def test_given_settings_convert_to_the_dataclass_and_back() -> None:
    given = {"memory_bytes": 300, "cpu_seconds": 0, "task_wall_seconds": 5.0,
             "unrelated": "x"}
    limits = apply(WorkerLimits, given)
    assert limits.memory_bytes == 300 * 2**20 and limits.cpu_seconds is None  # MiB; 0 = none
    assert apply(PeerConfig, given, PeerConfig(workers=1)).task_wall_seconds == 5.0
    assert command_line(WorkerLimits, given) == ["--max-task-memory", "300",
                                                 "--max-task-cpu", "0"]
    # Nothing given: the library's defaults, untouched.
    assert apply(MasterOptions, {}) == MasterOptions()
    # A repeatable option: a tuple, () when not given, each item again on the way back.
    assert apply(PeerConfig, {"read_stores": ()}, PeerConfig(workers=1)).read_stores == ()
    config = apply(PeerConfig, {"read_stores": ("a", "b")}, PeerConfig(workers=1))
    assert config.read_stores == ("a", "b")
    assert command_line(PeerConfig, {"read_stores": ("a", "b")}) == \
        ["--read-store", "a", "--read-store", "b"]


def test_the_command_line_shows_the_librarys_defaults() -> None:
    usage = " ".join(run_cli("peer", "--help").stdout.decode().split())
    memory = WorkerLimits().memory_bytes
    assert memory is not None
    assert re.search(rf"--max-task-memory MIB .*\[default: {memory // 2**20}\]", usage)
    assert f"[default: {PeerConfig(workers=1).fetch_timeout:g}]" in usage
    usage = " ".join(run_cli("run", "--help").stdout.decode().split())
    assert f"--peer-timeout SECONDS Seconds of silence after which a peer counts as dead. " \
           f"[default: {MasterOptions().peer_timeout:g}]" in usage
