"""The user's documents cannot rot: every path they name exists, every `python -m MODULE` they write
imports and answers --help, every --flag written after it is one its parser accepts, and none of them
cites a document that does not ship with the project.

    python -m pytest -q tests/test_docs.py

Read: README.md, docs/*.md, jetson/README.md. Commands are taken from fenced code blocks (one command
line each, `\\` continuations joined) and from inline code spans; a command ends at `&&`, `;`, `|` or a
`#` comment. The modules' --help runs in one subprocess (torch and Lightning imported once).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("train", "export", "runtime", "sim", "benchmarks", "pipeline", "plotting", "serve")
FOLDERS = (*PACKAGES, "firmware", "jetson", "tests", "docs")
# documents that exist only on the authors' machines: a user reading a citation of them finds nothing
UNSHIPPED = ("REFERENCE.md", "DESIGN.md")
# a path relative to the repository root: starts with one of its folders, not inside a longer path or a URL
PATH = re.compile(r"(?<![\w./~-])((?:" + "|".join(FOLDERS) + r")/[\w./*-]*)")
MODULE = re.compile(r"python3? -m ([A-Za-z_][\w.]*)(.*)")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
COMMAND_END = re.compile(r"\s#|&&|;|(?<!\\)\|")
# a shell would read "<this repository>" as a redirect: a placeholder a user cannot run
PLACEHOLDER = re.compile(r"(?<![<\w])<[a-z][\w ]*>(?!>)")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "jetson" / "README.md"]


def split_markdown(text: str) -> tuple[list[str], list[str], str]:
    """(fenced command lines, inline code spans, the prose without fenced blocks)."""
    fenced, prose, inside = [], [], False
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        if inside:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            fenced.append(pending + line)
            pending = ""
        else:
            prose.append(line)
    prose_text = "\n".join(prose)
    spans = [s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", prose_text)]
    return fenced, spans, prose_text


def commands(doc: Path) -> list[tuple[str, str, list[str]]]:
    """(module, the command as written, the --flags written after it, the first bare word after the module: a
    subcommand where the module has them) for every `python -m` of a project package."""
    fenced, spans, _ = split_markdown(doc.read_text())
    found = []
    for line in fenced + spans:
        line = line.replace("\\|", "/")  # a table cell's escaped "|" separates alternatives, not commands
        for segment in COMMAND_END.split(line):
            m = MODULE.search(segment)
            if m and m.group(1).split(".")[0] in PACKAGES:
                words = m.group(2).split()
                sub = words[0] if words and re.fullmatch(r"[a-z][\w-]*", words[0]) else None
                ours = m.group(2).split("--ros-args")[0]  # what follows --ros-args belongs to ROS, not our parser
                found.append((m.group(1), segment.strip(), FLAG.findall(ours), sub))
    return found


def named_paths(doc: Path) -> set[str]:
    text = doc.read_text()
    out = set()
    for raw in PATH.findall(text):
        path = raw.rstrip(".,:")
        if path:
            out.add(path)
    return out


def path_exists(path: str) -> bool:
    if any(c in path for c in "*?["):
        return any(ROOT.glob(path.rstrip("/")))
    if (ROOT / path).exists():
        return True
    # a build output (firmware/build/pty_controller): its folder's Makefile must name it
    folder, _, rest = path.partition("/build/")
    makefile = ROOT / folder / "Makefile"
    return bool(rest) and makefile.is_file() and f"build/{rest}" in makefile.read_text()


@lru_cache(maxsize=1)
def helps() -> dict:
    """{"module" or "module sub": {"code": exit status, "out": its --help}}, in one interpreter per round. A bare
    word after the module is taken as a subcommand where `module word --help` answers with a help of its own."""
    found = {(m, s) for doc in documents() for m, _, _, s in commands(doc)}
    res = _run_helps(sorted({m for m, _ in found}))
    subs = _run_helps(sorted({f"{m} {s}" for m, s in found if s})) if any(s for _, s in found) else {}
    return {**res, **{k: v for k, v in subs.items() if v["code"] == 0 and v["out"] != res[k.split()[0]]["out"]}}


def _run_helps(modules: list[str]) -> dict:
    script = (
        "import contextlib, io, json, runpy, sys, traceback\n"
        "res = {}\n"
        "for entry in sys.argv[1:]:\n"
        "    mod, *sub = entry.split()\n"
        "    out = io.StringIO()\n"
        "    sys.argv = [mod, *sub, '--help']\n"
        "    code = 0\n"
        "    try:\n"
        "        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):\n"
        "            runpy.run_module(mod, run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as e:\n"
        "        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)\n"
        "    except BaseException:\n"
        "        code, _ = 1, out.write(traceback.format_exc())\n"
        "    res[entry] = {'code': code, 'out': out.getvalue()}\n"
        "print('\\n@@JSON@@' + json.dumps(res))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert "@@JSON@@" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.split("@@JSON@@", 1)[1])


def parser_options(help_text: str) -> set[str]:
    """The options argparse lists: lines after the first section header ("options:", "positional arguments:")
    that start with "-" (the description above them may show example commands; they do not count)."""
    lines = help_text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if re.match(r"^(options|optional arguments|positional arguments):", line)), len(lines))
    opts = set()
    for line in lines[start:]:
        m = re.match(r"^\s+(-.*?)(?:\s{2,}|$)", line)
        if m:
            opts.update(FLAG.findall(m.group(1)))
    return opts


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_document_names_exists(doc):
    missing = sorted(p for p in named_paths(doc) if not path_exists(p))
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_document_cites_an_unshipped_one_or_a_placeholder(doc):
    text = doc.read_text()
    cited = [name for name in UNSHIPPED if name in text]
    assert not cited, f"{doc.relative_to(ROOT)} cites {cited}, which users do not have: put the facts in docs/"
    fenced, _, _ = split_markdown(text)
    placeholders = [line for line in fenced if PLACEHOLDER.search(line.split(" #")[0])]
    assert not placeholders, f"{doc.relative_to(ROOT)}: commands a shell cannot run as written: {placeholders}"


def test_no_file_of_the_project_cites_an_unshipped_document():
    hits = []
    for path in ROOT.rglob("*"):
        if (path.suffix not in (".py", ".md", ".sh", ".toml", ".service", ".txt", ".cfg") and path.name != "Makefile"
                or any(p.startswith(".") or p in ("build", "demo", "runs") for p in path.relative_to(ROOT).parts)
                or path == Path(__file__)):
            continue
        text = path.read_text(errors="replace")
        hits += [f"{path.relative_to(ROOT)}: {name}" for name in UNSHIPPED if name in text]
    assert not hits, "citations of documents users do not have:\n" + "\n".join(hits)


def test_every_documented_command_answers_help_and_accepts_its_flags():
    results = helps()
    problems = []
    for doc in documents():
        for module, written, flags, sub in commands(doc):
            key = f"{module} {sub}" if f"{module} {sub}" in results else module
            r = results[key]
            if r["code"] != 0:
                problems.append(f"{doc.relative_to(ROOT)}: `python -m {key} --help` exits {r['code']}: "
                                f"{r['out'][-500:]}")
                continue
            unknown = sorted(set(flags) - parser_options(r["out"]))
            if unknown:
                problems.append(f"{doc.relative_to(ROOT)}: `{written}`: {key} has no {', '.join(unknown)}")
    assert not problems, "\n".join(problems)


def test_the_checks_see_what_they_should():
    """The extraction itself: a table cell's alternatives, a continuation line, a comment, a placeholder."""
    fenced, spans, _ = split_markdown("x `python -m train.fit --data d --preset tiny\\|kosmos2 --max-epochs 2`\n"
                                      "```bash\npython -m sim.drive --seed 3 \\\n  --mode step  # --not-a-flag\n"
                                      "git clone <this repository> here\n```\n")
    assert fenced[0].split() == ["python", "-m", "sim.drive", "--seed", "3", "--mode", "step", "#", "--not-a-flag"]
    assert PLACEHOLDER.search(fenced[1]) and not PLACEHOLDER.search("cat <<EOF") and not PLACEHOLDER.search("a<b>")
    assert FLAG.findall(COMMAND_END.split(spans[0].replace("\\|", "/"))[0]) == ["--data", "--preset", "--max-epochs"]
    assert parser_options("usage: x [-h]\n\n  --fake in the description\n\noptions:\n  -h, --help  show\n"
                          "  --seed SEED  the room --not-this\n  --mode {a,b}\n") == {"--help", "--seed", "--mode"}
    assert PATH.findall("see tests/jetson/test_kit.py, /opt/mobile-vla/venv and https://x.org/docs/y") == \
        ["tests/jetson/test_kit.py"]


# -- installs by machine ----------------------------------------------------------------------------
VENV = "/opt/mobile-vla/venv"  # the one venv path on the robot (jetson/setup.sh, the unit, the scripts, the docs)


def optional_dependencies() -> dict[str, list[str]]:
    """pyproject.toml's extras: tomllib on Python 3.11+, tomli where installed, else the plain lists read as Python."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:
        try:
            import tomli as tomllib
        except ImportError:
            tomllib = None
    if tomllib is not None:
        return tomllib.loads(text)["project"]["optional-dependencies"]
    import ast

    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    section = "\n".join(line.split(" #")[0] for line in section.splitlines() if not line.lstrip().startswith("#"))
    return {m.group(1): ast.literal_eval(m.group(2))
            for m in re.finditer(r"^(\w+)\s*=\s*(\[.*?\])", section, re.S | re.M)}


def jetson_extras() -> set[str]:
    """Every extra a Jetson document or script installs (`pip install ... .[a,b]` / `${here}[a]`)."""
    sources = [ROOT / "jetson" / "README.md", *sorted((ROOT / "jetson").glob("*.sh")), ROOT / "jetson" / "Dockerfile"]
    extras = set()
    for path in sources:
        for line in path.read_text().splitlines():
            if "pip install" in line:
                for group in re.findall(r"[.}\w]\[([\w,]+)\]", line):
                    extras.update(group.split(","))
    return extras


def test_no_extra_a_jetson_installs_resolves_an_opencv_wheel_on_aarch64():
    from packaging.requirements import Requirement

    deps = optional_dependencies()
    extras = jetson_extras()
    assert {"runtime", "train"} <= extras, extras  # setup.sh's, and gpu_check's on a Jetson
    aarch64 = {"platform_machine": "aarch64", "sys_platform": "linux", "platform_system": "Linux",
               "python_version": "3.10", "extra": ""}
    x86 = {**aarch64, "platform_machine": "x86_64"}

    def wheels(extra, env):
        reqs = [Requirement(r) for r in deps[extra]]
        return {r.name for r in reqs if r.marker is None or r.marker.evaluate(env)}

    on_jetson = {e: sorted(n for n in wheels(e, aarch64) if n.startswith("opencv")) for e in sorted(extras)}
    assert not any(on_jetson.values()), f"OpenCV wheels a Jetson would install: {on_jetson}"
    assert "opencv-python-headless" in wheels("train", x86) and "opencv-python-headless" in wheels("runtime", x86)
    assert not wheels("jetson", aarch64)  # a pip TensorRT/pycuda would shadow JetPack's


def test_setup_installs_python3_venv_and_makes_the_one_venv(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "TEGRA_RELEASE": str(tmp_path / "absent"),
           "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "jetson" / "setup.sh"), "--dry-run"], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    planned = [line for line in proc.stdout.splitlines() if line.startswith("would run:")]
    apt = [line for line in planned if "apt-get install" in line]
    assert apt and "python3-venv" in apt[0].split()
    assert any(line.endswith(f"-m venv --system-site-packages {VENV}") for line in planned), planned


def test_one_venv_path_everywhere():
    files = [ROOT / "README.md", ROOT / "jetson" / "README.md", ROOT / "jetson" / "setup.sh",
             ROOT / "jetson" / "mobile-vla-drive.service", ROOT / "jetson" / "engine_common.sh"]
    for path in files:
        text = path.read_text()
        assert VENV in text, f"{path.relative_to(ROOT)} does not name {VENV}"
        assert ".venv-jetson" not in text, f"{path.relative_to(ROOT)} still names a second venv path"
