"""The docs say only what is there: README.md, docs/*.md and benchmarks/README.md cite results, files, anchors,
CLI options and MLproject parameters that exist, and every current benchmark result records where it came from;
the package's docstrings and comments name modules, functions and test files that exist.
Fast: no network, no training."""

from __future__ import annotations

import ast
import functools
import importlib.util
import io
import itertools
import json
import re
import shlex
import tokenize
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from asl_mlops.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]  # the user docs
ALL_PAGES = [*PAGES, ROOT / "benchmarks" / "README.md"]  # and the lab's page

FENCE = re.compile(r"^\s*(```|~~~)")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def split_fences(text: str) -> tuple[list[str], list[str]]:
    """(prose lines, fenced code lines) of a Markdown text; a line keeps its place as '' in the other list."""
    prose, code, inside = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            prose.append("")
            code.append("")
        elif inside:
            prose.append("")
            code.append(line)
        else:
            prose.append(line)
            code.append("")
    return prose, code


def expand_braces(word: str) -> list[str]:
    """Shell brace expansion of one level at a time: a-{b,c}.json -> a-b.json, a-c.json."""
    match = re.search(r"\{([^{}]*,[^{}]*)\}", word)
    if not match:
        return [word]
    return [expanded for part in match.group(1).split(",")
            for expanded in expand_braces(word[:match.start()] + part + word[match.end():])]


def cited(pattern: re.Pattern, lines: list[str]) -> list[tuple[int, str]]:
    return [(number, expanded) for number, line in enumerate(lines, 1)
            for found in pattern.finditer(line) for expanded in expand_braces(found.group(0))]


# A results path, braces allowed: benchmarks/results/levers-c32-24epochs-{val05,val10}.json
RESULT_PATH = re.compile(r"benchmarks/results/[\w.{},/-]*?\.json")
# A bare JSON name: not part of a longer path (no '/' or '.' or a word character right before it).
BARE_JSON = re.compile(r"(?<![\w/.{},-])[\w{},.-]*\w\.json\b")
MODULE_PATH = re.compile(r"asl_mlops/[\w.{},/-]*[\w/}]")


def test_readme_is_at_most_250_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; detail belongs in docs/"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_cited_results_are_current(page: Path):
    """Every benchmarks/results/... path (prose or code) and every bare result name in prose is a current
    result: in benchmarks/results/ itself, not only in archive/."""
    prose, code = split_fences(page.read_text())
    missing = []
    for number, path in cited(RESULT_PATH, prose) + cited(RESULT_PATH, code):
        name = path.removeprefix("benchmarks/results/")
        if "/" in name or not (RESULTS / name).is_file():
            missing.append(f"{rel(page)}:{number}: {path}")
    # Bare names outside code: a request body written by a shell example (pixels.json) is in code, not here.
    for number, name in cited(BARE_JSON, [RESULT_PATH.sub("", line) for line in prose]):
        if not (RESULTS / name).is_file():
            missing.append(f"{rel(page)}:{number}: {name}")
    assert not missing, "cited results that are not current (archived or absent):\n" + "\n".join(missing)


def provenance_module():
    spec = importlib.util.spec_from_file_location("benchmarks_provenance", ROOT / "benchmarks" / "provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CURRENT = sorted(RESULTS.glob("*.json"))


def test_there_are_current_results():
    assert CURRENT, "benchmarks/results/ holds no JSON"


@pytest.mark.parametrize("path", CURRENT, ids=lambda path: path.name)
def test_every_current_result_records_its_provenance(path: Path):
    recorded = provenance_module().recorded(json.loads(path.read_text()))
    assert recorded is not None, f"{path.name} records no provenance (run it through benchmarks/provenance.py)"
    for key in ("commit", "date", "machine", "command"):
        assert recorded.get(key), f"{path.name}: provenance has no {key}"


@pytest.mark.parametrize("page", ALL_PAGES, ids=rel)
def test_package_paths_exist(page: Path):
    missing = [f"{rel(page)}:{number}: {path}" for number, path in cited(MODULE_PATH, page.read_text().splitlines())
               if not (ROOT / path.rstrip(".")).exists()]
    assert not missing, "asl_mlops paths that do not exist:\n" + "\n".join(missing)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lowercase, punctuation removed, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # keeps letters, digits, '_', '-' and spaces
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose, _ = split_fences(page.read_text())
    seen: dict[str, int] = {}
    found = set()
    for line in prose:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            found.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return found


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", ALL_PAGES, ids=rel)
def test_relative_links_and_anchors_resolve(page: Path):
    prose, _ = split_fences(page.read_text())
    broken = []
    for number, line in enumerate(prose, 1):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            linked = (page.parent / path_part).resolve() if path_part else page
            if not linked.exists():
                broken.append(f"{rel(page)}:{number}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{rel(page)}:{number}: {target} (no heading '{anchor}' in {rel(linked)})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_slug_follows_github():
    assert slug("`asl-mlops serve`") == "asl-mlops-serve"
    assert slug("Data: Sign MNIST CSVs") == "data-sign-mnist-csvs"
    assert slug("`train.py` results") == "trainpy-results"
    assert slug("Serve, predict, evaluate") == "serve-predict-evaluate"


def joined_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(first line number, line) with backslash-continued lines joined."""
    out, start, parts = [], 0, []
    for number, line in enumerate(lines, 1):
        if not parts:
            start = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        out.append((start, " ".join(parts).strip()))
        parts = []
    if parts:
        out.append((start, " ".join(parts).strip()))
    return out


STOP = re.compile(r"^(\||\|\||&&?|;|\d?>>?.*|<.*|#.*)$")


def words(command: str) -> list[str]:
    """shlex words of one shell command, up to the first pipe, &&, ;, redirection or comment; a leading '$ '
    prompt and VAR=value assignments are dropped."""
    tokens = shlex.split(command.removeprefix("$ "), comments=True)
    out = []
    for token in tokens:
        if STOP.match(token):
            break
        out.append(token)
    while out and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", out[0]):
        out.pop(0)
    return out


PLACEHOLDER = re.compile(r"[A-Z][A-Z_]*|--name")


def code_commands(page: Path) -> list[tuple[int, list[str]]]:
    """Commands from fenced code blocks and from inline code spans in prose, as words."""
    prose, code = split_fences(page.read_text())
    found = [(number, words(line)) for number, line in joined_lines(code) if line and not line.startswith("#")]
    for number, line in enumerate(prose, 1):
        for span in re.findall(r"`([^`]+)`", line):
            try:
                argv = words(span)
            except ValueError:  # an unbalanced quote in a fragment of prose
                continue
            # Prose may name a form rather than a command: `asl-mlops COMMAND --help`, `asl-mlops train --name value`.
            if not any(PLACEHOLDER.fullmatch(word) for word in argv):
                found.append((number, argv))
    return found


def cli_args(argv: list[str]) -> list[str] | None:
    if argv[:1] == ["asl-mlops"]:
        return argv[1:]
    if argv[:3] in (["python", "-m", "asl_mlops"], ["python3", "-m", "asl_mlops"]):
        return argv[3:]
    return None


def help_of(args: list[str]):
    return CliRunner().invoke(cli_main, [*args, "--help"])


def test_help_check_catches_an_unknown_option():
    """The check below relies on click refusing an unknown option even when --help is given."""
    assert help_of(["train"]).exit_code == 0
    assert help_of(["train", "--no-such-option", "1"]).exit_code != 0
    assert help_of(["no-such-command"]).exit_code != 0


@pytest.mark.parametrize("page", ALL_PAGES, ids=rel)
def test_documented_cli_commands_exist(page: Path):
    wrong = []
    for number, argv in code_commands(page):
        args = cli_args(argv)
        if args is None or not args:
            continue
        result = help_of(args)
        if result.exit_code != 0:
            error = (result.output.strip().splitlines() or [repr(result.exception)])[-1]
            wrong.append(f"{rel(page)}:{number}: {shlex.join(argv)}\n    {error}")
    assert not wrong, "documented commands the CLI refuses:\n" + "\n".join(wrong)


def mlflow_run(argv: list[str]) -> list[str] | None:
    for start in range(len(argv) - 2):
        if argv[start:start + 3] == ["mlflow", "run", "."]:
            return argv[start + 3:]
    return None


@pytest.mark.parametrize("page", ALL_PAGES, ids=rel)
def test_documented_mlflow_runs_name_real_parameters(page: Path):
    entry_points = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    wrong = []
    for number, argv in code_commands(page):
        args = mlflow_run(argv)
        if args is None:
            continue
        entry, params = "main", []
        for flag, value in itertools.pairwise(args):
            if flag in ("-e", "--entry-point"):
                entry = value
            elif flag in ("-P", "--param-list"):
                params.append(value.partition("=")[0])
        where = f"{rel(page)}:{number}: {shlex.join(argv)}"
        if entry not in entry_points:
            wrong.append(f"{where}\n    no entry point {entry!r}")
            continue
        known = entry_points[entry].get("parameters") or {}
        wrong += [f"{where}\n    {entry!r} has no parameter {name!r}" for name in params if name not in known]
    assert not wrong, "documented mlflow runs with unknown entry points or parameters:\n" + "\n".join(wrong)


def test_mlflow_check_sees_parameters():
    assert mlflow_run(words("MLFLOW_TRACKING_URI=x mlflow run . -e original -P epochs=2 | tee log")) == \
        ["-e", "original", "-P", "epochs=2"]


# --- names and paths in docstrings, comments and docs -------------------------------------------------------------

PACKAGE = ROOT / "asl_mlops"
#: A dotted name in the package: asl_mlops.training.fit.fit, asl_mlops.hands.
DOTTED_NAME = re.compile(r"\basl_mlops(?:\.\w+)+")
#: A source or test file: asl_mlops/gate.py, tests/serving/test_app.py.
SOURCE_PATH = re.compile(r"(?<![\w/.-])(?:asl_mlops|tests)/[\w/.-]*\.py\b")


def prose_of_module(path: Path) -> list[tuple[int, str]]:
    """(line, text) of a module's docstrings (module, classes, functions) and comments."""
    text = path.read_text()
    found = [(node.body[0].lineno, ast.get_docstring(node, clean=False)) for node in ast.walk(ast.parse(text))
             if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
             and ast.get_docstring(node, clean=False)]
    found += [(token.start[0], token.string) for token in tokenize.generate_tokens(io.StringIO(text).readline)
              if token.type == tokenize.COMMENT]
    return found


@functools.cache
def names_in_code() -> frozenset[str]:
    """Dotted strings the code itself uses that are names, not modules: MLflow tags (asl_mlops.heartbeat), loggers
    (asl_mlops.access)."""
    return frozenset(node.value for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
                     if isinstance(node, ast.Constant) and isinstance(node.value, str)
                     and DOTTED_NAME.fullmatch(node.value))


def defined_in(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    """The names a module or class body defines (def, class, assignment; inside if/try at that level too), not the
    names it imports."""
    found: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                found.update({name.id: node for name in ast.walk(target) if isinstance(name, ast.Name)})
        elif isinstance(node, (ast.If, ast.Try)):
            found.update(defined_in(node.body + node.orelse + getattr(node, "finalbody", [])))
    return found


def resolves(name: str) -> bool:
    """Whether asl_mlops.a.b.c is a module, or a name the longest module it starts with defines (a class's names
    too). Read from the source, not imported; a name that module only imports, like asl_mlops.train.fit, points the
    reader to the wrong file."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:split])
        source = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if source.is_file():
            break
    else:
        return False
    body = ast.parse(source.read_text()).body
    for attribute in parts[split:]:
        node = defined_in(body).get(attribute)
        if node is None:
            return False
        body = node.body if isinstance(node, ast.ClassDef) else []
    return True


def wrong_references(where: str, number: int, text: str, code_names: frozenset[str]) -> list[str]:
    """`where:line: name` for each name or path in `text` (starting at line `number`) that points nowhere."""
    wrong = [match for match in DOTTED_NAME.finditer(text) if match[0] not in code_names and not resolves(match[0])]
    wrong += [match for match in SOURCE_PATH.finditer(text) if not (ROOT / match[0]).is_file()]
    return [f"{where}:{number + text.count(chr(10), 0, match.start())}: {match[0]}" for match in wrong]


#: Python files whose docstrings and comments are read (not this one: it shows stale names on purpose), and other
#: files read whole.
MODULES = [path for path in (*sorted(PACKAGE.rglob("*.py")), *sorted((ROOT / "tests").rglob("*.py")))
           if path != Path(__file__).resolve()]
PROJECT_FILES = [ROOT / name for name in ("MLproject", "pyproject.toml", "conda.yaml", ".ci/run")]


@pytest.mark.parametrize("path", [*MODULES, *ALL_PAGES, *PROJECT_FILES], ids=rel)
def test_package_names_and_source_paths_resolve(path: Path):
    """Every asl_mlops.* name in the docstrings and comments of the package and its tests, in the docs and the
    project files is a module or a name its module defines; every asl_mlops/....py and tests/....py path is a file."""
    prose = prose_of_module(path) if path.suffix == ".py" else list(enumerate(path.read_text().splitlines(), 1))
    code_names = names_in_code()
    wrong = [found for number, text in prose for found in wrong_references(rel(path), number, text, code_names)]
    assert not wrong, "names and paths that point nowhere (moved or deleted?):\n" + "\n".join(wrong)


def test_reference_check_catches_stale_names_and_paths():
    stale = "as asl_mlops.train.fit does; asl_mlops.serving.log_recognizer; tests/test_server.py; asl_mlops/x.py"
    assert len(wrong_references("x", 1, stale, frozenset())) == 4
    current = "asl_mlops.training.fit.fit, asl_mlops.hands, asl_mlops.config.DEFAULT_MAX_BODY_BYTES, tests/test_docs.py"
    assert wrong_references("x", 1, current, frozenset()) == []
    assert wrong_references("x", 1, "the tag `asl_mlops.heartbeat`", names_in_code()) == []
