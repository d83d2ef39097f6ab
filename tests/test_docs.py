"""The user's documents cannot rot: every path they name exists, every command they write is parsed by the
command's own parser, and none of them cites a document that does not ship with the project.

    python -m pytest -q tests/test_docs.py

Read: README.md, docs/*.md, jetson/README.md. Commands are taken from fenced code blocks, indented code blocks
(four spaces after a blank line) and inline code spans (one command line each, `\\` continuations joined); a
command ends at `&&`, `;`, `|` or a `#` comment. What each kind must satisfy:

- `python -m MODULE ...` of a project package (serve included): the module answers --help, and the command as
  written is parsed by the module's own argparse parser (placeholders and a table's alternatives substituted
  first: `tiny\\|kosmos2` -> `tiny`, `[--fp16]` -> `--fp16`, `...` dropped). A code block's command must parse
  whole; an inline span may leave out required arguments (it shows one option), never hold a wrong one. All
  parses run in one subprocess with argparse stopped right after parsing, so nothing is executed.
- `bash jetson/SCRIPT.sh ...`: the flags the script takes itself (`--dry-run`), its positional count, and what it
  hands to a module (gpu_check.sh's to benchmarks.gpu_check, check.sh's motor flags after `--` to
  runtime.preflight), parsed by that module's parser.
- `make TARGET` (and `make -C DIR TARGET`): a target of that Makefile. `.[a,b]` extras: names pyproject defines.

`test_a_planted_bad_command_fails_in_every_kind_of_document` plants a wrong flag in each kind of document (an
indented block, a fenced block, a table cell, python -m serve, a jetson script, a make target, an extra, the
dry run that slipped through before) and sees each reported.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
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
SCRIPT = re.compile(r"(?:^|\s)bash (jetson/[\w-]+\.sh)\b(.*)")
MAKE = re.compile(r"^(?:\S+=\S+\s+)*make((?:\s+\S+)*)\s*$")
EXTRAS = re.compile(r"(?:^|[\s'\"])(?:\.|\$\{here\}|mobile-vla-edge)\[([\w,-]+)\]")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
COMMAND_END = re.compile(r"\s#|&&|;|(?<!\\)\|")
# a shell would read "<this repository>" as a redirect: a placeholder a user cannot run
PLACEHOLDER = re.compile(r"(?<![<\w])<[a-z][\w ]*>(?!>)")
REDIRECT = re.compile(r"\s\d?>>?\s*\S+|\s2>&1|\s&$")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "jetson" / "README.md"]


def split_markdown(text: str) -> tuple[list[str], list[str], str]:
    """(code block lines: fenced and indented, inline code spans, the prose without code blocks)."""
    code, prose, inside = [], [], False
    pending, previous_blank, in_indented = "", True, False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            continue
        indented = not inside and line.startswith("    ") and line.strip() and (previous_blank or in_indented)
        in_indented = bool(indented) or (in_indented and not line.strip())
        previous_blank = not line.strip()
        if inside or indented:
            body = line[4:] if indented else line
            if body.rstrip().endswith("\\"):
                pending += body.rstrip()[:-1] + " "
                continue
            code.append(pending + body)
            pending = ""
        else:
            prose.append(line)
    prose_text = "\n".join(prose)
    spans = [s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", prose_text)]
    return code, spans, prose_text


@dataclass(frozen=True)
class Command:
    doc: str  # the document's path relative to the repository
    kind: str  # "python", "script", "make", "extras"
    written: str  # the command as written
    name: str  # module, script, Makefile folder
    argv: tuple[str, ...]  # the arguments after it, substituted
    whole: bool  # from a code block (must parse whole) or an inline span (a fragment)


def substituted(args: str) -> list[str] | None:
    """The words of a documented command as a shell would pass them, with the docs' notations resolved."""
    args = re.sub(r"(\S+?)\\\|\S+", r"\1", args)  # a table cell's alternatives: the first
    args = re.sub(r"\[(--?[^\[\]]*)\]", r"\1", args)  # [--fp16], [--host 0.0.0.0 --api-key K]: as given
    args = REDIRECT.sub(" ", " " + args)
    args = re.sub(r"(?<=\s)\$\{?[A-Z_]+\}?(?=\s|$)", " ", args)  # an unquoted $MOTOR_ARGS: the words it stands for
    try:
        words = shlex.split(args)
    except ValueError:
        return None
    # "..." after an option stands for its value (--instruction "..."), elsewhere for more arguments (dropped)
    return [("TEXT" if i and words[i - 1].startswith("--") else None) if w in ("...", "…") else w
            for i, w in enumerate(words) if w not in ("...", "…") or (i and words[i - 1].startswith("--"))]


def commands(doc: Path, text: str | None = None) -> list[Command]:
    text = doc.read_text() if text is None else text
    name = str(doc.relative_to(ROOT)) if doc.is_absolute() else str(doc)
    code, spans, _ = split_markdown(text)
    found = []
    for whole, lines in ((True, code), (False, spans)):
        for line in lines:
            for segment in COMMAND_END.split(line):
                segment = segment.strip()
                m = MODULE.search(segment)
                if m and m.group(1).split(".")[0] in PACKAGES:
                    words = substituted(m.group(2).split("--ros-args")[0])  # after --ros-args: ROS's arguments
                    found.append(Command(name, "python", segment, m.group(1), tuple(words or ()), whole))
                    if words is None:
                        found.append(Command(name, "unparsable", segment, m.group(1), (), whole))
                    continue
                m = SCRIPT.search(segment)
                if m:
                    found.append(Command(name, "script", segment, m.group(1), tuple(substituted(m.group(2)) or ()),
                                         whole))
                    continue
                m = MAKE.match(segment)
                if m and (whole or segment.startswith("make ")):
                    found.append(Command(name, "make", segment, "", tuple(m.group(1).split()), whole))
                for group in EXTRAS.findall(segment):
                    found.append(Command(name, "extras", segment, "", tuple(group.split(",")), whole))
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


# ------------------------------------------------------------------------------ the modules' own parsers
_PARSE = r"""
import argparse, contextlib, io, json, runpy, sys, traceback

class Parsed(BaseException):
    pass

depth, in_parse_args = [0], [0]
original_known, original_args = argparse.ArgumentParser.parse_known_args, argparse.ArgumentParser.parse_args

def parse_known_args(self, args=None, namespace=None):
    depth[0] += 1
    try:
        result = original_known(self, args, namespace)
    finally:
        depth[0] -= 1
    if depth[0] == 0 and not in_parse_args[0]:
        raise Parsed()  # parsed (what it does not know is the module's to handle): stop before it does anything
    return result

def parse_args(self, args=None, namespace=None):
    in_parse_args[0] += 1
    try:
        result = original_args(self, args, namespace)  # refuses unknown arguments
    finally:
        in_parse_args[0] -= 1
    if not in_parse_args[0]:
        raise Parsed()
    return result

argparse.ArgumentParser.parse_known_args = parse_known_args
argparse.ArgumentParser.parse_args = parse_args
res = {}
for key, mod, argv in json.loads(sys.stdin.read()):
    out = io.StringIO()
    sys.argv = [mod, *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_module(mod, run_name='__main__', alter_sys=True)
        code = 'ran'  # no parser stopped it: the module does not parse its arguments with argparse
    except Parsed:
        code = 'parsed'
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        code, _ = 1, out.write(traceback.format_exc())
    res[key] = {'code': code, 'out': out.getvalue()}
print('\n@@JSON@@' + json.dumps(res))
"""


def run_parsers(jobs: list[tuple[str, str, list[str]]]) -> dict:
    """{key: {"code": "parsed" | exit status | "ran", "out": what it printed}} for (key, module, argv) jobs,
    all in one interpreter (torch and Lightning imported once)."""
    proc = subprocess.run([sys.executable, "-c", _PARSE], input=json.dumps(jobs), capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert "@@JSON@@" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.split("@@JSON@@", 1)[1])


# what each jetson/ script takes: its own flags, how many positional arguments, and a module its other arguments go to
SCRIPTS = {
    "jetson/build_engines.sh": {"flags": {"--dry-run"}, "positional": (1, 1)},
    "jetson/bench.sh": {"flags": {"--dry-run"}, "positional": (1, 1)},
    "jetson/setup.sh": {"flags": {"--dry-run"}, "positional": (0, 0)},
    "jetson/gpu_check.sh": {"flags": {"--dry-run"}, "positional": (0, 0), "rest": ("benchmarks.gpu_check",
                                                                                   ["--out", "x.json"])},
    "jetson/check.sh": {"flags": set(), "positional": (1, 3), "after_dashes": ("runtime.preflight",
                                                                             ["--bundle", "b", "--camera", "csi"])},
}


def script_jobs(command: Command) -> tuple[list[str], list[tuple[str, str, list[str]]]]:
    """(problems found without a parser, parser jobs) for `bash jetson/X.sh ARGS`."""
    spec = SCRIPTS.get(command.name)
    if spec is None:
        return [f"{command.name}: not a script this test knows the arguments of (add it to SCRIPTS)"], []
    argv, problems, jobs = list(command.argv), [], []
    if "after_dashes" in spec and "--" in argv:
        cut = argv.index("--")
        module, prefix = spec["after_dashes"]
        jobs.append((f"{command.written}@@after", module, prefix + argv[cut + 1:]))
        argv = argv[:cut]
    own = [a for a in argv if a.startswith("--") and a in spec["flags"]]
    rest = [a for a in argv if a not in own]
    if "rest" in spec and not own:
        module, prefix = spec["rest"]
        jobs.append((f"{command.written}@@rest", module, prefix + rest))
        return problems, jobs
    flags = [a for a in rest if a.startswith("-")]
    if flags:
        problems.append(f"{command.name} takes no {', '.join(flags)} (it takes {sorted(spec['flags'])})")
    lo, hi = spec["positional"]
    positional = [a for a in rest if not a.startswith("-")]
    if command.whole and not lo <= len(positional) <= hi:
        problems.append(f"{command.name} takes {lo}-{hi} arguments, given {positional}")
    return problems, jobs


@lru_cache(maxsize=1)
def makefile_targets() -> dict[str, set[str]]:
    found = {}
    for makefile in [ROOT / "Makefile", *ROOT.glob("*/Makefile")]:
        folder = "." if makefile.parent == ROOT else makefile.parent.name
        found[folder] = set(re.findall(r"^([\w./-]+)\s*:(?!=)", makefile.read_text(), re.M))
    return found


def make_problems(command: Command) -> list[str]:
    words, folder = list(command.argv), "."
    if "-C" in words:
        folder = words[words.index("-C") + 1].rstrip("/")
        del words[words.index("-C"):words.index("-C") + 2]
    targets = [w for w in words if not w.startswith("-") and "=" not in w]
    known = makefile_targets().get(folder)
    if known is None:
        return [f"make -C {folder}: no {folder}/Makefile"]
    return [f"make: {folder}/Makefile has no target {t!r}" for t in targets if t not in known]


def check(all_commands: list[Command], parses: dict) -> list[str]:
    """Every problem of these commands, given the parser results of `parser_jobs(all_commands)`."""
    extras = set(optional_dependencies())
    problems = []
    for c in all_commands:
        where = f"{c.doc}: `{c.written}`"
        if c.kind == "unparsable":
            problems.append(f"{where}: a shell cannot split it (unbalanced quotes)")
        elif c.kind == "python":
            problems += [f"{where}: {p}" for p in parse_problems(parses, c, f"{c.name} {c.argv}")]
        elif c.kind == "script":
            own, jobs = script_jobs(c)
            problems += [f"{where}: {p}" for p in own]
            for key, module, _ in jobs:
                problems += [f"{where}: {p}" for p in parse_problems(parses, c, key, module)]
        elif c.kind == "make":
            problems += [f"{where}: {p}" for p in make_problems(c)]
        elif c.kind == "extras":
            problems += [f"{where}: pyproject.toml has no extra {e!r}" for e in c.argv if e not in extras]
    return problems


def parse_problems(parses: dict, command: Command, key: str, module: str | None = None) -> list[str]:
    r = parses[key]
    module = module or command.name
    if r["code"] in ("parsed", 0):
        return []
    if r["code"] == "ran":
        return [f"{module} ran without parsing its arguments with argparse: this test cannot check it"]
    message = r["out"].strip().splitlines()[-1] if r["out"].strip() else f"exit {r['code']}"
    if not command.whole and re.search(r"the following arguments are required|expected (at least )?one argument",
                                       message):
        return []  # an inline span shows an option, not a whole command
    if re.search(r"invalid (int|float) value: '[A-Z][A-Z_]*'", message):
        return []  # a placeholder (--robots R) where a number goes
    return [f"{module} refuses it: {message}"]


def parser_jobs(all_commands: list[Command]) -> list[tuple[str, str, list[str]]]:
    jobs = {}
    for c in all_commands:
        if c.kind == "python":
            jobs[f"{c.name} {c.argv}"] = (f"{c.name} {c.argv}", c.name, list(c.argv))
            jobs[f"{c.name} --help"] = (f"{c.name} --help", c.name, ["--help"])
        elif c.kind == "script":
            for key, module, argv in script_jobs(c)[1]:
                jobs[key] = (key, module, argv)
    return list(jobs.values())


PLANTED = {  # a wrong command in each kind of document and of command, and what must be said about it
    "docs/migrating.md": ("\n    python -m train.fit --init imported/ --data rec/ --bogus-flag 1 --out runs/\n\n",
                          "unrecognized arguments: --bogus-flag"),
    "docs/serving.md": ("\n```bash\npython -m serve --bundle bundle/ --bogus-port 1\n```\n",
                        "unrecognized arguments: --bogus-port"),
    "README.md": ("\n| x | `python -m export.to_onnx CKPT --out bundle/ [--fp17]` | y |\n",
                  "unrecognized arguments: --fp17"),
    "jetson/README.md": ("\n```bash\npython -m runtime.drive --bundle b/ --serial /dev/ttyUSB0 --dry-run\n```\n",
                         "not allowed with argument"),
    "docs/recording.md": ("\n```\nbash jetson/build_engines.sh --bogus bundle/\n```\n", "takes no --bogus"),
    "docs/performance.md": ("\nrun `bash jetson/gpu_check.sh --sizes huge`\n", "invalid choice: 'huge'"),
    "docs/reliability.md": ("\n```bash\nbash jetson/check.sh bundle/ csi -- --motor ros2 --bogus-topic x\n```\n",
                            "unrecognized arguments: --bogus-topic"),
    "docs/training.md": ("\n```bash\nmake test-everything\n```\n", "no target 'test-everything'"),
    "docs/motors.md": ("\n```bash\npip install -e '.[runtime,robots]'\n```\n", "no extra 'robots'"),
    "docs/evaluation.md": ("\n    python -m sim.evaluate --bundle b/ --episodes 5 \\\n        --seeds 3\n\n",
                           "unrecognized arguments: --seeds"),
}


@lru_cache(maxsize=1)
def everything() -> tuple[list[Command], dict[str, list[Command]], dict]:
    """(the documents' commands, {planted doc: its commands with the plant}, every parser result), one subprocess."""
    real = [c for doc in documents() for c in commands(doc)]
    planted = {name: commands(Path(name), (ROOT / name).read_text() + plant) for name, (plant, _) in PLANTED.items()}
    parses = run_parsers(parser_jobs(real + [c for cs in planted.values() for c in cs]))
    return real, planted, parses


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
    placeholders = [line for line in fenced if PLACEHOLDER.search(line.split(" #")[0])
                    and not line.lstrip().startswith("<")]  # a layout drawn in a block (<s> <image> ...), not a command
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


def test_every_documented_command_is_parsed_by_its_own_parser():
    real, _, parses = everything()
    kinds = {c.kind for c in real}
    assert {"python", "script", "make", "extras"} <= kinds, kinds
    assert any(c.name == "serve" for c in real) and any(c.doc == "docs/migrating.md" and c.whole for c in real)
    helpless = sorted({f"{c.doc}: python -m {c.name} --help exits {parses[f'{c.name} --help']['code']}"
                       for c in real if c.kind == "python" and parses[f"{c.name} --help"]["code"] != 0})
    problems = helpless + check(real, parses)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", sorted(PLANTED))
def test_a_planted_bad_command_fails_in_every_kind_of_document(doc):
    real, planted, parses = everything()
    _, expected = PLANTED[doc]
    new = [c for c in planted[doc] if c not in set(real)]
    assert new, f"the plant in {doc} was not read as a command"
    problems = check(new, parses)
    assert any(expected in p for p in problems), problems


def test_the_checks_see_what_they_should():
    """The extraction itself: a table cell's alternatives, a continuation line, a comment, a placeholder, an
    indented block, a redirect."""
    code, spans, _ = split_markdown("x `python -m train.fit --data d --preset tiny\\|kosmos2 --max-epochs 2`\n"
                                    "```bash\npython -m sim.drive --seed 3 \\\n  --mode step  # --not-a-flag\n"
                                    "git clone <this repository> here\n```\n\n    python -m serve --bundle b/\n"
                                    "\n- a list item\n    continued, not code\n")
    assert code[0].split() == ["python", "-m", "sim.drive", "--seed", "3", "--mode", "step", "#", "--not-a-flag"]
    assert code[2] == "python -m serve --bundle b/" and len(code) == 3
    assert PLACEHOLDER.search(code[1]) and not PLACEHOLDER.search("cat <<EOF") and not PLACEHOLDER.search("a<b>")
    assert substituted(" --data d ... --preset tiny\\|kosmos2 [--fp16] > log 2>&1 &") == \
        ["--data", "d", "--preset", "tiny", "--fp16"]
    found = commands(Path("x.md"), "`bash jetson/setup.sh --dry-run` and `make -C firmware` and "
                                   "`pip install -e '.[train,export]'`\n")
    assert [(c.kind, c.name, c.argv) for c in found] == [("script", "jetson/setup.sh", ("--dry-run",)),
                                                         ("make", "", ("-C", "firmware")),
                                                         ("extras", "", ("train", "export"))]
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
