"""The docs point only at what a clone has, and the command reference is the CLI's.

- every relative link in README.md and docs/*.md leads to a file of the checkout that git does
  not ignore (and, with `#anchor`, to a heading of that page);
- every backticked repository path (`imgtool/…`, `tests/…`, `benchmarks/…`, `fixtures/…`,
  `docs/…`) exists;
- docs/commands.md has one section per click command, and each section's option table names
  exactly that command's options.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from imgtool.cli import cli

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
REPO_DIRS = ("imgtool", "tests", "benchmarks", "fixtures", "docs")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
REPO_PATH = re.compile(rf"(?<![\w./$-])(?:\./)?((?:{'|'.join(REPO_DIRS)})/[\w.*/-]*)")
COMMAND_HEADING = re.compile(r"^## `(imgtool(?: [a-z-]+)*)`\s*$", re.M)
OPTION_ROW = re.compile(r"^\| `([^`]+)` \|", re.M)


def prose(text: str) -> str:
    """The text outside fenced code blocks (commands there are examples, not references)."""
    return re.sub(r"(?ms)^```.*?^```", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}


def ignored_by_git(paths: list[Path]) -> set[Path]:
    """Those of `paths` a clone would not have (git ignores them); none without git."""
    git = shutil.which("git")
    if not git or not (REPO / ".git").exists() or not paths:
        return set()
    proc = subprocess.run(
        [git, "check-ignore", "--stdin"],
        input="\n".join(str(p.relative_to(REPO)) for p in paths),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return {REPO / line for line in proc.stdout.splitlines()}


def missing(paths: list[Path]) -> list[Path]:
    ignored = ignored_by_git([p for p in paths if p.exists()])
    return [p for p in paths if not p.exists() or p in ignored]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_to_files_of_the_checkout(page: Path) -> None:
    bad = []
    targets: dict[Path, list[str]] = {}
    for link in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        targets.setdefault(path, []).append(link)
        if anchor and path.suffix == ".md" and path.exists() and anchor not in anchors(path):
            bad.append(f"{link}: no heading #{anchor}")
    bad += [f"{link}: no such file" for p in missing(list(targets)) for link in targets[p]]
    assert bad == [], f"{page.name}: {bad}"


def repo_paths(text: str) -> list[str]:
    found = []
    for _, span in CODE_SPAN.findall(prose(text)):
        found += [m.rstrip(".") for m in REPO_PATH.findall(span)]
    return found


def exists_in_repo(name: str) -> bool:
    if "*" in name:
        return any(REPO.glob(name))
    return not missing([REPO / name])


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_backticked_repository_paths_exist(page: Path) -> None:
    named = repo_paths(page.read_text())
    assert [n for n in named if not exists_in_repo(n)] == [], page.name


def test_the_path_finder_finds_paths() -> None:
    """The two checks above see what they should (else they pass on anything)."""
    text = (
        "see `imgtool/store.py`, `./tests/conftest.py -k x`, `benchmarks/*.py`; not "
        "`/sys/fs/cgroup/imgtool/`, `imgtool run`\n```\nfixtures/in_a_block.py\n```\n"
    )
    assert repo_paths(text) == ["imgtool/store.py", "tests/conftest.py", "benchmarks/*.py"]
    assert not exists_in_repo("imgtool/no_such_module.py")
    assert not exists_in_repo("imgtool.egg-info") or not (REPO / ".git").exists()
    assert LINK.findall("[a](docs/x.md#y) [b](https://e.org)") == ["docs/x.md#y", "https://e.org"]
    assert slug("`imgtool network ls`") == "imgtool-network-ls"
    assert slug("Skips, and CI") == "skips-and-ci"


@dataclass(frozen=True)
class Section:
    command: str
    options: frozenset[str]


def documented() -> dict[str, Section]:
    text = prose((REPO / "docs" / "commands.md").read_text())
    heads = list(COMMAND_HEADING.finditer(text))
    out = {}
    for head, nxt in zip(heads, [*heads[1:], None], strict=True):
        body = text[head.end() : nxt.start() if nxt else len(text)]
        flags = {
            word.rstrip(",")
            for cell in OPTION_ROW.findall(body)
            for word in cell.split()
            if word.startswith("-")
        }
        out[head.group(1)] = Section(head.group(1), frozenset(flags))
    return out


def click_commands() -> dict[str, Section]:
    """Every command of the CLI (groups' subcommands too), with its option names."""
    out = {}
    stack: list[tuple[str, click.Command]] = [("imgtool", cli)]
    while stack:
        name, cmd = stack.pop()
        ctx = click.Context(cmd, info_name=name)
        names = {
            opt
            for p in cmd.get_params(ctx)
            if isinstance(p, click.Option)
            for opt in (*p.opts, *p.secondary_opts)
        } - {"-h", "--help"}  # on every command (context_settings of the group)
        out[name] = Section(name, frozenset(names))
        if isinstance(cmd, click.Group):
            for sub in cmd.list_commands(ctx):
                found = cmd.get_command(ctx, sub)
                assert found is not None, f"{name} {sub}"
                stack.append((f"{name} {sub}", found))
    return out


def test_every_click_command_is_documented_and_every_documented_one_exists() -> None:
    docs, real = documented(), click_commands()
    assert len(real) > 20  # the walk found the lazily imported commands
    assert sorted(set(real) - set(docs)) == [], "commands missing from docs/commands.md"
    assert sorted(set(docs) - set(real)) == [], "docs/commands.md documents no such command"


def test_each_command_section_lists_exactly_its_options() -> None:
    docs, real = documented(), click_commands()
    wrong = {
        name: {
            "undocumented": sorted(real[name].options - docs[name].options),
            "not options": sorted(docs[name].options - real[name].options),
        }
        for name in set(docs) & set(real)
        if docs[name].options != real[name].options
    }
    assert wrong == {}
    assert docs["imgtool run"].options >= {"-m", "--memory", "--publish-all"}
