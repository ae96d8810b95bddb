"""The documentation: the README and the guides under docs/.

Every Python block marked runnable (an HTML comment `<!-- runnable -->` on the line before
its fence) runs as a user would paste it: saved as a script in an empty folder and run by a
fresh interpreter. A block marked `<!-- runnable: NAME.py -->` is a module the page asks the
reader to save: it is written as NAME.py beside every later block of the same page, and
imported on its own.

The site builds strictly (`mkdocs build --strict`: broken links and anchors, pages missing
from the navigation and failing docstring references fail it), and its generated pages hold
every tag, config key and command. The README stays a front door: short, every agent preset
in its table, every figure of its results table a link to the report that holds it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
MARK = re.compile(r"<!-- runnable(?::\s*(?P<file>[\w.-]+\.py))?\s*-->")
BLOCK_TIMEOUT_S = 600
# the guides that show their subject from Python, each with a runnable example
GUIDES_WITH_EXAMPLES = [
    "checkpoints.md",
    "dashboards.md",
    "evaluate.md",
    "kl-controllers.md",
    "networks.md",
    "python.md",
    "tune.md",
]


@dataclasses.dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the marker, 1-based
    code: str
    file: str | None  # a module to save, or None: a script to run

    @property
    def name(self) -> str:
        return f"{_shown(self.page)}:{self.line}"


def _shown(page: Path) -> str:
    return str(page.relative_to(ROOT) if page.is_relative_to(ROOT) else page)


def blocks(page: Path) -> list[Block]:
    """The runnable blocks of a page, in order; a marker without a Python fence after it
    raises."""
    lines = page.read_text(encoding="utf-8").split("\n")
    found = []
    for i, line in enumerate(lines):
        m = MARK.fullmatch(line.strip())
        if m is None:
            continue
        where = f"{_shown(page)}:{i + 1}"
        if i + 1 >= len(lines) or lines[i + 1].strip() != "```python":
            raise ValueError(f"{where}: a runnable marker must stand right above a ```python fence")
        end = next((j for j in range(i + 2, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{where}: the fence is not closed")
        found.append(Block(page, i + 1, "\n".join(lines[i + 2 : end]) + "\n", m["file"]))
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MPLBACKEND="Agg", NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: b.name)
def test_a_runnable_block_runs_as_pasted(block: Block, tmp_path: Path):
    for earlier in ALL_BLOCKS:  # the modules the page asked to save before this block
        if earlier.page == block.page and earlier.line < block.line and earlier.file:
            (tmp_path / earlier.file).write_text(earlier.code, encoding="utf-8")
    if block.file:
        (tmp_path / block.file).write_text(block.code, encoding="utf-8")
        args = [sys.executable, "-c", f"import {block.file.removesuffix('.py')}"]
    else:
        (tmp_path / "example.py").write_text(block.code, encoding="utf-8")
        args = [sys.executable, "example.py"]
    res = _run(args, tmp_path, BLOCK_TIMEOUT_S)
    assert res.returncode == 0, f"{block.name} failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"


def test_the_readme_and_the_guides_have_runnable_examples():
    def runnable(page: Path) -> list[Block]:
        return [b for b in ALL_BLOCKS if b.page == page and b.file is None]

    assert runnable(README), "the README's Python example is not marked runnable"
    for name in GUIDES_WITH_EXAMPLES:
        assert runnable(ROOT / "docs" / name), f"docs/{name} has no runnable example"


def test_a_marker_must_stand_above_a_python_fence(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("<!-- runnable -->\n```bash\necho hi\n```\n")
    with pytest.raises(ValueError, match="right above a ```python fence"):
        blocks(page)
    page.write_text("<!-- runnable: mod.py -->\n```python\nX = 1\n```\n")
    assert blocks(page) == [Block(page, 1, "X = 1\n", "mod.py")]


# ---------------------------------------------------------------- the README


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_the_readme_is_a_short_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    order = ["## Set up", "## Train, watch, evaluate", "## Use it from Python", "## Agents"]
    order += ["## Results", "## Documentation"]
    positions = [text.index(f"\n{h}\n") for h in order]
    assert positions == sorted(positions), "the README's sections are out of order"
    assert "docs/dashboard-trust-region.png" in text[: positions[0]]
    setup = _section(text, "Set up")
    for command in ("bash scripts/setup.sh ", "bash scripts/setup.sh --test"):
        assert command in setup
    assert "minutes" in setup and "-m slow" in setup


def test_the_readme_agents_table_names_every_preset():
    table = _section(README.read_text(encoding="utf-8"), "Agents")
    listed = set(re.findall(r"^\| `([\w.-]+)` \|", table, flags=re.M))
    presets = {p.stem for p in (ROOT / "agents").glob("*.yaml")}
    assert listed == presets


def _tables(text: str) -> list[list[list[str]]]:
    """The markdown tables of `text`, each a list of rows of cells, separator rows dropped."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()):
                current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables, current = [*tables, current], []
    return tables


def test_every_figure_of_the_readme_results_links_to_the_report_that_holds_it():
    tables = _tables(_section(README.read_text(encoding="utf-8"), "Results"))
    assert len(tables) >= 2 and len(tables[0]) >= 6  # against SB3; against the published marks
    link = re.compile(r"\[([-\d.]+)\]\(([^)\s]+)\)")
    for header, *rows in tables:
        for row in rows:
            assert len(row) == len(header), row
            for column, cell in zip(header[2:], row[2:], strict=True):  # the first two name the run
                for figure, target in link.findall(cell):
                    report = (README.parent / target).resolve()
                    assert report.is_file(), f"{figure}: {target} does not exist"
                    text = report.read_text(encoding="utf-8")
                    assert figure in text, f"{figure} not in {target}"
                rest = link.sub("", cell).replace("`ppo-paper`", "")
                assert not re.search(r"\d", rest), (
                    f"{column}: a figure without a link to its report (minus signs as '-'): {cell}"
                )


def test_the_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+:", target):
            assert (ROOT / target).exists(), target


# ---------------------------------------------------------------- the site


def _hooks():
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts/docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_links_written_for_github_are_rewritten_for_the_site():
    rewrite = _hooks().rewrite_links
    # a guide in docs/ linking a report and the changelog outside docs/
    page = (
        "[r](../benchmarks/mujoco/report.md#x) [c](../CHANGELOG.md) [t](train.md) [w](https://a.b)"
    )
    assert rewrite(page, "results.md") == (
        "[r](benchmarks/mujoco/report.md#x) [c](changelog.md) [t](train.md) [w](https://a.b)"
    )
    assert rewrite("[a](../agents.md)", "reference/api.md") == "[a](../agents.md)"
    assert rewrite("[r](../../benchmarks/atari/report.md)", "reference/cli.md") == (
        "[r](../benchmarks/atari/report.md)"
    )
    # the README, the site's home page, linking into docs/ and to a picture there
    readme = (
        "[t](docs/train.md) ![d](docs/dashboard-trust-region.png) [r](benchmarks/mujoco/report.md)"
    )
    assert rewrite(readme, "index.md") == (
        "[t](train.md) ![d](dashboard-trust-region.png) [r](benchmarks/mujoco/report.md)"
    )
    # a report's own pictures, code blocks and files the site does not hold stay as written
    assert rewrite("![o](overview.png)", "benchmarks/mujoco/report.md") == "![o](overview.png)"
    fenced = "```python\nx = a[0](docs/train.md)\n```"
    assert rewrite(fenced, "index.md") == fenced
    assert rewrite("[s](../rl_trust/tags.py)", "train.md") == "[s](../rl_trust/tags.py)"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    res = _run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], ROOT, 600
    )
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout}\n{res.stderr}"
    return out


def test_the_site_builds_strictly(site: Path):
    assert (site / "index.html").is_file()
    for page in ("train", "dashboards", "reference/api", "reference/config", "changelog"):
        assert (site / page / "index.html").is_file(), page
    assert (site / "benchmarks" / "mujoco" / "report" / "index.html").is_file()


def test_the_dashboards_guide_lists_every_tag(site: Path):
    from rl_trust import tags

    page = (site / "dashboards" / "index.html").read_text(encoding="utf-8")
    missing = [t for t in tags.MEANINGS if f"<code>{t}</code>" not in page]
    assert not missing, f"tags missing from the dashboards guide: {missing}"


def test_the_reference_lists_every_config_key_and_command(site: Path):
    from rl_trust import cli, config

    page = (site / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    keys = config.all_keys("ppo") | config.all_keys("trpo")
    missing = [k for k in sorted(keys) if f"<code>{k}</code>" not in page]
    assert not missing, f"config keys missing from the reference: {missing}"
    page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    commands = re.findall(r"sub\.add_parser\(\"(\w+)\"", Path(cli.__file__).read_text())
    assert commands and all(f"rl-trust {c}" in page for c in commands)
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    documented = ["api.PPO", "api.TRPO", "api.load", "train.stops", "tune.tune"]
    documented += [f"api.PPO.{m}" for m in ("learn", "predict", "save", "load", "num_timesteps")]
    missing = [n for n in documented if f'id="rl_trust.{n}"' not in api]
    assert not missing, f"missing from the API reference: {missing}"
