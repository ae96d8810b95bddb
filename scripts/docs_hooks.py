"""MkDocs hooks for the documentation site (registered in mkdocs.yml under `hooks:`).

The site's pages live in docs/, but three kinds of pages live elsewhere in the repository
and are brought in here, so that one strict build checks every link between them:

- README.md becomes the home page (`index.md`) and CHANGELOG.md `changelog.md`;
- every benchmark report and note (benchmarks/**/*.md) and the pictures beside it keep their
  repository path (`benchmarks/mujoco/report.md`), and get a "Benchmark reports" section in
  the navigation, one entry per report, titled by its folder.

Each page is written to read well on GitHub, so its links are repository paths relative to
the file (`../benchmarks/mujoco/report.md` from docs/, `docs/train.md` from README.md);
`on_page_markdown` turns every such link to a file the site holds into the site's own path.
A link to a file the site does not hold is left as it is, and the strict build fails on it.

Three references are generated rather than written, so they cannot fall behind the code:
`<!-- generated: tags -->` becomes every TensorBoard tag in `rl_trust.tags.MEANINGS`,
`<!-- generated: config -->` every config field with its type, default and description
(`rl_trust.config.describe`, what `rl-trust config --explain` prints), and
`<!-- generated: cli -->` every command's `--help`.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import posixpath
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
# repository path -> site path, for the files brought in from outside docs/
OUTSIDE = {"README.md": "index.md", "CHANGELOG.md": "changelog.md"}
REPORTS_DIR = "benchmarks"
REPORTS_SECTION = "Benchmark reports"
# benchmark folders whose Markdown is data, not a report (per-trial logs and runs)
SKIP_PARTS = {"tb", "trials", "hyperparams"}

LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
FENCE = re.compile(r"^(```|~~~)")


@functools.cache
def _benchmark_files() -> dict[str, str]:
    """The reports and notes under benchmarks/ with the pictures they show."""
    found = {}
    for path in sorted((ROOT / REPORTS_DIR).rglob("*")):
        rel = path.relative_to(ROOT).as_posix()
        if not path.is_file() or SKIP_PARTS & set(path.relative_to(ROOT).parts):
            continue
        if path.suffix in (".md", ".png", ".svg"):
            found[rel] = rel
    return found


def _outside() -> dict[str, str]:
    return {**OUTSIDE, **_benchmark_files()}


def _report_title(rel: str) -> str:
    """A report's title in the navigation: its folder (most reports' first heading is the
    same "rl-trust benchmark"), and the file's name where it says more."""
    folder = posixpath.dirname(rel).removeprefix(REPORTS_DIR + "/")
    stem = posixpath.basename(rel).removesuffix(".md")
    if stem in ("report", "README") or folder.endswith(stem) or stem.startswith(folder):
        return folder
    return f"{folder}: {stem}"


def on_config(config, **kwargs):
    """Add every benchmark report to the navigation's "Benchmark reports" section."""
    _benchmark_files.cache_clear()  # (mkdocs serve rebuilds in one process)
    _docs_files.cache_clear()
    sys.path.insert(0, str(ROOT))  # rl_trust, for the generated tables
    reports = [
        {_report_title(rel): site}
        for rel, site in _benchmark_files().items()
        if rel.endswith(".md")
    ]
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and REPORTS_SECTION in entry:
            entry[REPORTS_SECTION] = reports
            break
    else:
        raise ValueError(f"mkdocs.yml: the nav needs a {REPORTS_SECTION!r} section (empty)")
    return config


def on_files(files: Files, config, **kwargs) -> Files:
    for rel, site in _outside().items():
        if files.get_file_from_path(site) is None:
            files.append(File.generated(config, site, abs_src_path=str(ROOT / rel)))
    return files


def _repo_path(src_uri: str) -> str:
    """Where a site page lives in the repository."""
    back = {site: rel for rel, site in _outside().items()}
    return back.get(src_uri, "docs/" + src_uri)


def rewrite_links(markdown: str, src_uri: str) -> str:
    """Links written as repository paths relative to the page's file, made relative to the
    page's place in the site (outside fenced code)."""
    to_site = {"docs/" + p.as_posix(): p.as_posix() for p in _docs_files()}
    to_site.update(_outside())
    here = posixpath.dirname(_repo_path(src_uri))
    site_here = posixpath.dirname(src_uri)

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return m.group(0)
        path, hash_, anchor = target.partition("#")
        repo = posixpath.normpath(posixpath.join(here, path))
        if repo not in to_site:
            return m.group(0)
        site = posixpath.relpath(to_site[repo], site_here or ".")
        return m.group(1) + site + hash_ + anchor + m.group(3)

    out, fenced = [], False
    for line in markdown.split("\n"):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        out.append(line if fenced else LINK.sub(fix, line))
    return "\n".join(out)


@functools.cache
def _docs_files() -> list[Path]:
    docs = ROOT / "docs"
    return [p.relative_to(docs) for p in docs.rglob("*") if p.is_file()]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """Code in a table cell: as HTML, since a Markdown code span would show an escaped |."""
    return "<code>" + html.escape(str(text)).replace("|", "&#124;") + "</code>"


def tags_table() -> str:
    """Every TensorBoard tag rl-trust writes, grouped by its prefix, with its meaning."""
    from rl_trust import tags

    groups: dict[str, list[tuple[str, str]]] = {}
    for name, meaning in tags.MEANINGS.items():
        groups.setdefault(name.split("/")[0], []).append((name, meaning))
    parts = []
    for prefix, rows in groups.items():
        parts.append(f"**`{prefix}/`** ({len(rows)} tags)\n")
        parts.append("| tag | what it is |\n|---|---|")
        parts += [f"| `{name}` | {_cell(meaning)} |" for name, meaning in rows]
        parts.append("")
    return "\n".join(parts)


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def _shown(value) -> str:
    if isinstance(value, tuple):
        value = list(value)
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...")


def config_table() -> str:
    """Every config key, section by section: type, default and description."""
    import typing

    from rl_trust import config

    sections = [
        ("run", "run settings", config.RunSettings),
        ("env", "the env", config.EnvConfig),
        ("agent", "every agent", config.AgentConfig),
        ("agent", "PPO only", config.PPOConfig),
        ("agent", "TRPO only (or with another default)", config.TRPOConfig),
    ]
    common = config.AgentConfig
    inherited = {
        f.name: (_shown(_default(f)), config.describe(common).get(f.name, ""))
        for f in dataclasses.fields(common)
    }
    parts = []
    for section, what, cls in sections:
        docs = config.describe(cls)
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            default, doc = _shown(_default(f)), docs.get(f.name, "")
            if cls is not common and inherited.get(f.name) == (default, doc):
                continue  # the same as every agent's, listed there
            tp = re.sub(r"\btyping\.", "", str(hints[f.name])).replace("NoneType", "None")
            tp = re.sub(r"<class '(\w+)'>", r"\1", tp)
            rows.append(f"| `{f.name}` | {_code(tp)} | {_code(default)} | {_cell(doc)} |")
        parts.append(f"### `{section}`: {what}\n")
        parts.append("| key | type | default | what it does |\n|---|---|---|---|")
        parts += rows
        parts.append("")
    return "\n".join(parts)


def cli_help() -> str:
    """Every command's --help, as the parser in rl_trust/cli.py prints it."""
    import argparse
    import os

    from rl_trust import cli

    width = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "90"  # (argparse wraps to the terminal's width)
    try:
        parser = cli.build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parts = []
        for name, command in sub.choices.items():
            parts.append(f"## `rl-trust {name}`\n")
            parts.append("```text\n" + command.format_help().rstrip() + "\n```\n")
        return "\n".join(parts)
    finally:
        if width is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = width


GENERATED = {"tags": tags_table, "config": config_table, "cli": cli_help}


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    def generate(m: re.Match) -> str:
        name = m.group(1)
        if name not in GENERATED:
            raise ValueError(f"{page.file.src_uri}: no generated table {name!r}")
        return GENERATED[name]()

    markdown = re.sub(r"<!-- generated: (\w+) -->", generate, markdown)
    return rewrite_links(markdown, page.file.src_uri)
