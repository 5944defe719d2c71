"""What a new user meets first: the install, and the README's examples."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .helpers import GUTENBERG, ROOT, run_cli

README = (ROOT / "README.md").read_text()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_the_environment_is_the_locked_one() -> None:
    """scripts/test.sh installs constraints.txt exactly, and it covers p2pmr's
    whole dependency tree, so a fresh machine tests what this one did."""
    from packaging.requirements import Requirement

    pins = _pins()
    needed = {"p2pmr"}
    todo = ["p2pmr"]
    while todo:
        package = todo.pop()
        for text in metadata.requires(package) or []:
            requirement = Requirement(text)
            extra = "test" if package == "p2pmr" else ""
            if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
                continue
            name = re.sub(r"[-_.]+", "-", requirement.name).lower()
            if name not in needed:
                needed.add(name)
                todo.append(name)
    needed.discard("p2pmr")
    assert not needed - pins.keys(), f"not pinned: {sorted(needed - pins.keys())}"
    for name in needed:
        assert metadata.version(name) == pins[name], f"{name} is not the pinned {pins[name]}"


def test_the_library_example_runs_as_written(tmp_path: Path) -> None:
    snippet = README.split("## The library", 1)[1].split("```python\n", 1)[1].split("```")[0]
    shutil.copy(ROOT / "examples" / "wordcount.py", tmp_path / "wordcount.py")
    shutil.copytree(GUTENBERG, tmp_path / "books")
    (tmp_path / "count.py").write_text(snippet)
    result = subprocess.run([sys.executable, "count.py"], cwd=tmp_path, capture_output=True,
                            timeout=180)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    complete = re.findall(r"(\d+)/(\d+) complete", out)
    assert len(complete) == 2 and all(a == b != "0" for a, b in complete), out
    assert complete[1] == ("4", "4") and out.split()[-1].startswith("Qm")


def test_the_command_table_matches_the_command_line() -> None:
    """Every option the README's table shows exists, and none is shown as
    required that is not."""
    table = README.split("## Command line", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `p2pmr ((?:[a-z]+ ?)+?)(?= [A-Z\[-]|`)", table, re.MULTILINE)
    assert {"add", "cat", "ls", "block get", "repo verify", "peer", "run", "id"} <= set(rows)
    for row in table.splitlines()[2:]:
        command = re.match(r"\| `p2pmr ((?:[a-z]+ ?)+?)(?= [A-Z\[-]|`)", row)
        assert command, row
        usage = run_cli(*command[1].split(), "--help").stdout.decode()
        for option in set(re.findall(r"--[a-z-]+", row)):
            assert option in usage, f"{option} is not an option of p2pmr {command[1]}"
    run_row = next(r for r in table.splitlines() if r.startswith("| `p2pmr run "))
    assert "[--reducers R]" in run_row and "--listen" in run_row


def test_every_public_name_resolves() -> None:
    """The public API is re-exported lazily; each name must lead somewhere."""
    import p2pmr

    for name in p2pmr.__all__:
        assert getattr(p2pmr, name) is not None, name


def test_light_entry_points_do_not_import_libp2p() -> None:
    """The command line's help and the worker processes start without libp2p
    (about a second of imports): a worker of a peer started by the ``p2pmr``
    script re-imports that script's module, the command line, when it spawns."""
    probe = ("import sys, {module}; "
             "print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'libp2p', 'multiaddr'}}))")
    for module in ("p2pmr.cli", "p2pmr._worker", "p2pmr.peer.config", "p2pmr.master.options",
                   "p2pmr.localswarm"):
        out = subprocess.run([sys.executable, "-c", probe.format(module=module)],
                             capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]", f"importing {module} imports {out.strip()}"
    usage = run_cli("--help").stdout.decode()
    assert "peer" in usage and "run" in usage


def test_the_readme_gives_the_compose_files_sequence() -> None:
    """The README's commands for the Docker cluster are the ones at the top of
    docker-compose.yml (scripts/compose-smoke.sh runs them)."""
    def commands(lines: list[str]) -> list[str]:
        return [line.split("  #")[0].strip() for line in lines if line.strip()]

    block = README.split("### A cluster in Docker", 1)[1].split("```sh\n", 1)[1].split("```")[0]
    header = []
    for line in (ROOT / "docker-compose.yml").read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("#   "):
            header.append(line[1:])
    assert commands(header) == commands(block.splitlines())
    assert commands(header)[0] == "docker compose build"
