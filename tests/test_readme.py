"""The README cannot drift from the code: every command its shell blocks name exists, with the
options they pass (console-script subcommands and flags by click introspection, Prefect CLI
subcommands and flags from their ``--help``, scripts, modules and repository files on disk)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import click
import pytest

from sr_core.cli import cli as sr_cli

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: shell words the blocks may use that are not this project's commands
SHELL = {"mkdir", "export", "source", "cd", "cat", "kill", "sleep", "curl", "echo", "ls", "test",
         "[", "cp", "chmod", "tail"}
#: arguments that name things the commands create or that live elsewhere
CREATED = ("out/", "s3://", "http://", ".prefect", "$")


def shell_blocks(markdown: str) -> list[str]:
    """The bodies of the ```bash blocks."""
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)


def commands(block: str) -> list[list[str]]:
    """Simple commands of a block: continuation lines joined, comments dropped, split at ``&&``,
    ``||``, ``;``, ``|`` and ``&``, leading ``VAR=value`` assignments removed."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        cmd: list[str] = []
        for w in [*lex, ";"]:
            if w in ("&&", "||", ";", "|", "&"):
                while cmd and re.match(r"^[A-Za-z_]\w*=", cmd[0]) and len(cmd) > 1:
                    cmd.pop(0)
                if cmd and not re.match(r"^[A-Za-z_]\w*=", cmd[0]):
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return out


def _click_command(words: list[str]) -> tuple[click.Command, list[str]]:
    cmd: click.Command = sr_cli
    rest = list(words)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in cmd.commands, f"sr-pipeline has no subcommand {name!r}"
        cmd = cmd.commands[name]
    return cmd, rest


def check_sr_pipeline(args: list[str]) -> None:
    cmd, rest = _click_command(args)
    opts = {o for p in cmd.params for o in [*p.opts, *p.secondary_opts]} | {"--help", "-h"}
    for a in rest:
        if a.startswith("--"):
            assert a.split("=")[0] in opts, f"sr-pipeline {cmd.name}: no option {a}"
        elif "/" in a and not a.startswith(CREATED):
            assert (REPO / a).exists(), f"sr-pipeline {cmd.name}: {a} does not exist"


@cache
def prefect_help(path: tuple[str, ...]) -> str:
    res = subprocess.run([str(BIN / "prefect"), *path, "--help"], capture_output=True, text=True,
                         timeout=120, env={"PATH": str(BIN), "PREFECT_HOME": "/tmp/readme-prefect",
                                           "HOME": "/tmp"})
    assert res.returncode == 0, f"prefect {' '.join(path)}: {res.stderr[-300:]}"
    return res.stdout


def check_prefect(args: list[str]) -> None:
    path: list[str] = []
    words = [a for a in args if a != "--no-prompt"]
    for w in words:  # the longest prefix of plain words that is a command group or command
        if w.startswith("-") or "/" in w or "=" in w:
            break
        if w not in prefect_help(tuple(path)):
            break
        path.append(w)
    assert path, f"prefect {' '.join(args)}: no such command"
    help_text = prefect_help(tuple(path))
    for a in words:
        if a.startswith("--"):
            assert a.split("=")[0] in help_text, f"prefect {' '.join(path)}: no option {a}"


def check(cmd: list[str]) -> None:
    exe, args = cmd[0], cmd[1:]
    if exe in SHELL:
        return
    if exe in (".venv/bin/sr-pipeline", "sr-pipeline"):
        return check_sr_pipeline(args)
    if exe in (".venv/bin/prefect", "prefect"):
        return check_prefect(args)
    if exe in ("bash", "sh"):
        assert (REPO / args[0]).is_file(), f"{args[0]} does not exist"
        return None
    if exe in (".venv/bin/python", "python", "python3"):
        if args[0] == "-m":
            if args[1] == "sr_core.cli":
                return check_sr_pipeline(args[2:])
            module = REPO / (args[1].replace(".", "/") + ".py")
            assert module.is_file(), f"python -m {args[1]}: no module {module}"
            rest = args[2:]
        else:
            script = REPO / args[0]
            assert script.is_file(), f"{args[0]} does not exist"
            source = script.read_text()
            for a in args[1:]:
                if a.startswith("--"):
                    assert f'"{a.split("=")[0]}"' in source, f"{args[0]}: no option {a}"
            rest = args[1:]
        for a in rest:
            if "/" in a and not a.startswith(CREATED) and not a.startswith("-"):
                assert (REPO / a).exists(), f"{' '.join(cmd)}: {a} does not exist"
        return None
    if exe.startswith(".venv/bin/"):
        assert (BIN / exe.rsplit("/", 1)[1]).is_file(), f"{exe} is not installed"
        return None
    pytest.fail(f"README runs {exe!r}: not a command this test knows; add it or check it")


def test_shell_block_parser() -> None:
    block = ("export A=1 B=2\nX=1 .venv/bin/sr-pipeline models   # list\n"
             ".venv/bin/prefect server start --port 4200 &\nmkdir -p out && bash scripts/x.sh\n")
    assert commands(block) == [["export", "A=1", "B=2"], [".venv/bin/sr-pipeline", "models"],
                               [".venv/bin/prefect", "server", "start", "--port", "4200"],
                               ["mkdir", "-p", "out"], ["bash", "scripts/x.sh"]]


def test_checks_can_fail() -> None:
    with pytest.raises(AssertionError):
        check([".venv/bin/sr-pipeline", "upscale", "a.tif", "out/b.tif", "--no-such-flag"])
    with pytest.raises(AssertionError):
        check([".venv/bin/sr-pipeline", "no-such-command"])
    with pytest.raises(AssertionError):
        check(["bash", "scripts/no-such-script.sh"])


def test_readme_commands_exist() -> None:
    blocks = shell_blocks((REPO / "README.md").read_text())
    cmds = [c for b in blocks for c in commands(b)]
    assert len(cmds) >= 10  # the set-up, CLI, flow, archive and stack blocks
    for cmd in cmds:
        check(cmd)
