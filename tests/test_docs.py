"""The documentation speaks to users and stays true to the tree.

- No development-process notes (issue numbers, sessions, lent machines, who filed what) in the
  README, docs/, the comments and strings of the code, the text the package ships, the
  requirements or CI; the history of decisions lives in docs/HISTORY.md, in product language.
- The README's layout names every subpackage and module (a new module without its line fails,
  naming it), and names none that is gone.
- Every file path docs/ARCHITECTURE.md names exists; every repository path and anchor the
  README and docs/ link to exists.
- The README's test command is the one CI runs (the last line of .ci/run), and the README
  starts with two commands: the demo on the bundled model, and the tests.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lpipdiff"
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

# Each pattern is a development-process note, never product language. Case-insensitive.
PROCESS_NOTES = {
    "an issue number": r"\bissues?[ -]?#?\d+",
    "a work session": r"(?<![.\w])sessions?\b",  # not requests.Session, InferenceSession or a session= argument
    "a lent machine": r"\blent\b",
    "who filed it": r"\bfiled by\b",
    "the people who built it": r"\b(?:engineers?|reviewers?)\b|\bthe lead\b|\b(?:another|other) helpers?\b",
    "the issue that asked for it": r"\b(?:the|this) issue\b",
}
PROCESS_NOTE = re.compile("|".join(f"(?:{pattern})" for pattern in PROCESS_NOTES.values()), re.IGNORECASE)


def python_text(path: Path):
    """(line number, text) of every comment and string (docstrings included) of a Python file:
    the prose in code, not its identifiers (a variable named ``session`` is not a note)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    for token in tokens:
        if token.type in (tokenize.COMMENT, tokenize.STRING) or token.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            for offset, line in enumerate(token.string.splitlines()):
                yield token.start[0] + offset, line


def shell_comments(path: Path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if "#" in line:
            yield number, line[line.index("#"):]


def markdown_lines(path: Path):
    yield from enumerate(path.read_text(encoding="utf-8").splitlines(), 1)


def documents():
    """What users read first: the README and docs/."""
    return [(README, markdown_lines), *((doc, markdown_lines) for doc in DOCS)]


def code():
    """What ships or is run beside the docs: the package (its modules and the text it carries: the
    model card's template, the bundled model's JSON), the demo, the benchmarks, the scripts, the
    requirements and the CI script. The tests are not: this file holds the notes it looks for, and
    pytest's fixture scope "session" is a string there."""
    python = [*sorted(PACKAGE.rglob("*.py")), ROOT / "app.py", *sorted((ROOT / "benchmarks").rglob("*.py")),
              *sorted((ROOT / "scripts").rglob("*.py"))]
    shell = [*sorted(ROOT.glob("requirements*.txt")), ROOT / "pyproject.toml", ROOT / ".ci" / "run",
             *sorted((ROOT / "benchmarks").rglob("*.sh")), *sorted((ROOT / "scripts").rglob("*.sh"))]
    text = [path for path in sorted(PACKAGE.rglob("*")) if path.suffix in (".md", ".json", ".txt")]
    return [*((path, python_text) for path in python if "__pycache__" not in path.parts),
            *((path, shell_comments) for path in shell), *((path, markdown_lines) for path in text)]


def process_notes(files) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}"
        for path, lines in files
        for number, line in lines(path)
        if PROCESS_NOTE.search(line)
    ]


@pytest.mark.parametrize(
    "text",
    ["since issue 22", "Issue #19's rule", "issues 10 and 13", "the issue-13 target", "a later session",
     "Sessions of work", "no GPU was lent", "filed by the team", "two other engineers' jobs",
     "the reviewer's faces", "ask the lead", "as the issue asked", "another helper's branch"],
)
def test_process_note_pattern_catches(text):
    assert PROCESS_NOTE.search(text)


@pytest.mark.parametrize(
    "text",
    ["requests.Session()", "onnxruntime.InferenceSession(path)", "the tissue 12",
     "reissue 3 tokens", "lentil", "a silent failure", "excellent", "facexlib's FaceRestoreHelper",
     "face_helper.py", "the helper detects faces", "misleading", "issues: none", "engineering"],
)
def test_process_note_pattern_spares(text):
    assert not PROCESS_NOTE.search(text)


def test_python_prose_is_comments_and_strings_only(tmp_path):
    module = tmp_path / "module.py"
    module.write_text('"""Doc, since issue 4."""\nsession = 1  # a session note\nx = "lent"\n', encoding="utf-8")
    found = [(number, line) for number, line in python_text(module) if PROCESS_NOTE.search(line)]
    assert [number for number, _ in found] == [1, 2, 3]
    assert all("session = 1" not in line for _, line in found)


def test_no_development_process_notes_in_docs():
    found = process_notes(documents())
    assert not found, (
        "development-process notes where users read (say it in product language; history goes to "
        "docs/HISTORY.md):\n" + "\n".join(found)
    )


def test_no_development_process_notes_in_code():
    files = code()
    assert {"lpipdiff/config/defaults.py", "app.py", "requirements.txt", "lpipdiff/hub/model_card.md"} <= {
        str(path.relative_to(ROOT)) for path, _ in files
    }
    found = process_notes(files)
    assert not found, (
        "development-process notes in comments, docstrings or shipped text (say why in product "
        "language; history goes to docs/HISTORY.md):\n" + "\n".join(found)
    )


def section(text: str, heading: str) -> str:
    """The body of a ``## heading`` section of a markdown file."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def layout_entries() -> set[str]:
    """The repository paths README's Layout names: a top-level bullet names a folder
    (``- `lpipdiff/io/`: ...``) or a file; bullets nested under a folder name its modules
    (``  - `images.py`: ...``)."""
    named, folder = set(), None
    for line in section(README.read_text(encoding="utf-8"), "Layout").splitlines():
        match = re.match(r"^(\s*)- `([^`]+)`", line)
        if not match:
            continue
        indent, name = match.groups()
        if not indent:
            folder = name if name.endswith("/") else None
            named.add(name.rstrip("/"))
        elif folder:
            named.add(folder + name.rstrip("/"))
    return named


def package_modules() -> list[str]:
    """Every subpackage and module of lpipdiff/, as repository paths (``__init__.py`` is its
    subpackage's line)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if "__pycache__" in relative.parts or "bundled" in relative.parts:
            continue
        found.append(str(relative.parent if path.name == "__init__.py" else relative).replace("\\", "/"))
    return sorted(set(found))


def test_readme_layout_names_every_module():
    named = layout_entries()
    missing = [module for module in package_modules() if module not in named]
    assert not missing, "README.md's Layout has no line for:\n" + "\n".join(
        f"  {module}  (add `- `{module}/`: ...` as a top-level bullet)" if not module.endswith(".py")
        else f"  {module}  (add `  - `{Path(module).name}`: ...` under `- `{Path(module).parent.as_posix()}/``)"
        for module in missing
    )


def test_readme_layout_names_nothing_that_is_gone():
    gone = sorted(name for name in layout_entries() if not (ROOT / name).exists())
    assert not gone, "README.md's Layout names paths that do not exist: " + ", ".join(gone)


PATH = re.compile(r"(?<![\w/.-])((?:lpipdiff|benchmarks|scripts|tests|examples|docs)/[\w./-]*[\w/]|app\.py)")


def test_architecture_paths_exist():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = sorted(set(PATH.findall(text)))
    assert len(named) >= 10, named  # the page names a file for every box
    missing = [path for path in named if not (ROOT / path).exists()]
    assert not missing, "docs/ARCHITECTURE.md names files that do not exist: " + ", ".join(missing)


def test_architecture_names_each_box_of_the_flow():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for path in ("lpipdiff/cli/commands.py", "app.py", "lpipdiff/model/sampling.py", "lpipdiff/faces/restorer.py",
                 "lpipdiff/model/pipeline_lpipdiff.py", "lpipdiff/model/backends.py", "lpipdiff/io/safe_files.py"):
        assert path in text, path


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[|\]\([^)]*\)", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"^#{1,6} ", line):
            continue
        base = slug(line.lstrip("#"))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def test_links_and_paths_in_docs_exist():
    """Every relative link (and its #anchor) and every repository file path named in README.md
    and docs/*.md exists."""
    problems = []
    for doc in [README, *DOCS]:
        text = doc.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z]+:", target):
                    continue  # a web address
                file, _, anchor = target.partition("#")
                resolved = (doc.parent / file) if file else doc
                if not resolved.exists():
                    problems.append(f"{doc.relative_to(ROOT)}:{number}: link to missing {file}")
                elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                    problems.append(f"{doc.relative_to(ROOT)}:{number}: no heading for #{anchor} in {file or doc.name}")
            for path in PATH.findall(line):
                if "." in Path(path).name and not (ROOT / path).exists():
                    problems.append(f"{doc.relative_to(ROOT)}:{number}: names missing file {path}")
    assert not problems, "\n".join(problems)


def readme_commands() -> list[str]:
    """The commands of the README's first code block, without their comments."""
    block = re.search(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert block, "README.md starts with no bash block"
    return [re.split(r"\s+#", line)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_the_demo_and_the_tests():
    commands = readme_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.startswith("pip install") and demo.endswith("python app.py"), demo
    assert "python -m pytest" in tests, tests
    assert README.read_text(encoding="utf-8").index("```bash") < README.read_text(encoding="utf-8").index("\n## ")


def test_readme_test_command_is_what_ci_runs():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert readme_commands()[1] == ci[-1], (readme_commands()[1], ci[-1])
