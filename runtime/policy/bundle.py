"""The bundle: the export's output folder and the runtime's only input (docs/bundle-format.md).

    from runtime.bundle import load_bundle
    bundle = load_bundle("bundle/")                 # checks fields and files (quick: see below)
    bundle = load_bundle("bundle/", verify="full")  # sha256 of every file, whatever was verified before
    bundle.graph_file("vision", "fp32")             # Path to vision.onnx
    python -m runtime.bundle bundle/ [--verify full]   # a summary, exit 1 if the checks fail (runtime/bundle.py)

`bundle.json` (written by `export.to_onnx`, format in docs/bundle-format.md)
records every graph's input/output names, shapes and dtypes, the
preprocessing, the prompt layout with the default instruction's ids, W, N,
the action axes and normalisation, versions, the variants (fp32, fp16, int8)
with their parity results, TensorRT engines built from it, and the sha256 of
every file.

Integrity without re-reading gigabytes at every start. Hashing the real
bundle means reading ~7 GB (fp32 language weights, vision, engines) from
eMMC on every systemd restart. So a full verification (sha256 of every file,
the first start, `--verify full`, or `python -m runtime.preflight`) is
recorded with each file's size, mtime, ctime and inode in a verification
record: `BUNDLE/.verified.json`, or, when the bundle folder is read-only (a
root-owned /opt install run by the `robot` user), one file per bundle under
$MOBILE_VLA_CACHE, systemd's $CACHE_DIRECTORY or ~/.cache/mobile-vla. A
quick start (the default) hashes the small files (tokenizer, head, anything
under 8 MiB) and checks the big ones against the record: same size, mtime,
ctime and inode as when they were hashed, against the same sha256 in
bundle.json. A file replaced, rewritten or copied anew changes at least one
of those (ctime cannot be set back from user space, unlike mtime), and is
then hashed again. `verify="full"` hashes everything regardless.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.policy.driving import Driving
from runtime.policy.preprocess import PreprocessConfig

FORMAT = "mobile-vla-bundle"
FORMAT_VERSION = 1
GRAPHS = ("vision", "language", "action_head")
REQUIRED_FIELDS = (
    "format", "format_version",
    "graphs.vision.inputs", "graphs.vision.outputs",
    "graphs.language.inputs", "graphs.language.outputs",
    "graphs.action_head.inputs", "graphs.action_head.outputs",
    "variants.fp32",
    "preprocess.size", "preprocess.mean", "preprocess.std", "preprocess.channel_order",
    "prompt.template", "prompt.max_text_tokens", "prompt.total_tokens", "prompt.latent_query_num",
    "prompt.default_instruction", "prompt.default_input_ids", "prompt.default_attention_mask",
    "policy.window", "policy.chunk", "policy.action_axes",
    "actions.range", "actions.units",
    "versions", "files",
)
SMALL_FILE_BYTES = 8 << 20  # hashed at every start; bigger files are checked against the verification record
VERIFY_MODES = ("quick", "full", "none")
RECORD_NAME = ".verified.json"
DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


class BundleError(ValueError):
    """A bundle that must not be run; the message names the file or field and what to do."""


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _get(d: dict, dotted: str):
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ints, or a str for a dynamic axis
    dtype: str

    def check(self, value: np.ndarray, where: str, dynamic: dict[str, tuple[int, int]] | None = None) -> None:
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{where}: input {self.name!r} must be a numpy array, got {type(value).__name__}")
        if value.dtype != DTYPES[self.dtype]:
            raise TypeError(f"{where}: input {self.name!r} must be {self.dtype}, got {value.dtype}")
        if value.ndim != len(self.shape):
            raise ValueError(f"{where}: input {self.name!r} must have shape {list(self.shape)}, "
                             f"got {list(value.shape)}")
        for axis, (want, got) in enumerate(zip(self.shape, value.shape)):
            if isinstance(want, str):
                lo, hi = (dynamic or {}).get(want, (1, 1 << 31))
                if not lo <= got <= hi:
                    raise ValueError(f"{where}: input {self.name!r} axis {axis} ({want}) must be in [{lo}, {hi}], "
                                     f"got {got}")
            elif want != got:
                raise ValueError(f"{where}: input {self.name!r} must have shape {list(self.shape)}, "
                             f"got {list(value.shape)}")

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d["dtype"])


class Bundle:
    def __init__(self, root: Path, manifest: dict):
        self.root = Path(root)
        self.manifest = manifest
        self._specs: dict = {}  # parsed once: backends check every call's inputs against them
        self.verified: dict = {"hashed": [], "trusted": []}  # what load_bundle read and what its record vouched for

    # -- contents ------------------------------------------------------------
    @property
    def window(self) -> int:
        return int(self.manifest["policy"]["window"])

    @property
    def chunk(self) -> int:
        return int(self.manifest["policy"]["chunk"])

    @property
    def action_axes(self) -> int:
        return int(self.manifest["policy"]["action_axes"])

    @property
    def action_range(self) -> float:
        return float(self.manifest["actions"]["range"])

    @property
    def driving(self) -> Driving:
        """How the policy was validated and should be driven (`driving`; defaults for older bundles)."""
        try:
            return Driving.from_dict(self.manifest.get("driving"), where=f"{self.root / 'bundle.json'}: driving")
        except ValueError as e:
            raise BundleError(f"{e}; export the bundle again or fix the record") from e

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.manifest["preprocess"])

    @property
    def variants(self) -> list[str]:
        return list(self.manifest["variants"])

    def _parsed(self, graph: str, kind: str):
        key = (graph, kind)
        if key not in self._specs:
            g = self.manifest["graphs"][graph]
            if kind == "dynamic_axes":
                self._specs[key] = {k: tuple(v) for k, v in g.get("dynamic_axes", {}).items()}
            else:
                self._specs[key] = [TensorSpec.from_dict(d) for d in g[kind]]
        return self._specs[key]

    def inputs(self, graph: str) -> list[TensorSpec]:
        return self._parsed(graph, "inputs")

    def outputs(self, graph: str) -> list[TensorSpec]:
        return self._parsed(graph, "outputs")

    def dynamic_axes(self, graph: str) -> dict[str, tuple[int, int]]:
        return self._parsed(graph, "dynamic_axes")

    def graph_file(self, graph: str, variant: str = "fp32") -> Path:
        if variant not in self.manifest["variants"]:
            raise BundleError(f"{self.root / 'bundle.json'}: no variant {variant!r}; this bundle has "
                              f"{', '.join(self.variants)} (export with --fp16 / --int8 to add one)")
        return self.root / self.manifest["variants"][variant]["files"][graph]

    def tokenizer(self):
        from tokenizers import Tokenizer  # noqa: PLC0415  tokenizers: the tokenizer's user only

        return Tokenizer.from_file(str(self.root / "tokenizer.json"))

    # -- checks --------------------------------------------------------------
    def check_fields(self) -> None:
        where = self.root / "bundle.json"
        if self.manifest.get("format") != FORMAT:
            raise BundleError(f"{where}: 'format' is {self.manifest.get('format')!r}, expected {FORMAT!r}")
        if int(self.manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise BundleError(f"{where}: format_version {self.manifest['format_version']} is newer than this "
                              f"runtime understands ({FORMAT_VERSION}); upgrade the runtime")
        for field in REQUIRED_FIELDS:
            try:
                _get(self.manifest, field)
            except KeyError:
                raise BundleError(f"{where}: missing field {field!r}; re-export the bundle "
                                  f"(python -m export.to_onnx CKPT --out DIR)") from None

    def check_files(self, mode: str = "full") -> dict:
        """Every listed file present and unchanged. mode "full": sha256 of all; "quick": small files hashed,
        big ones checked against the verification record (hashed when it does not vouch for them).
        Returns {"hashed": [names], "trusted": [names]} (what was read, what the record vouched for)."""
        if mode not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {mode!r}")
        done = {"hashed": [], "trusted": []}
        if mode == "none":
            return done
        record_path = verification_record_path(self.root)
        record = _read_record(record_path) if mode == "quick" else {}
        fresh = {}
        for name, info in self.manifest["files"].items():
            path = self.root / name
            try:
                st = path.stat()
            except FileNotFoundError:
                raise BundleError(f"{path}: listed in bundle.json but missing; copy the whole bundle folder") from None
            seen = _stat_key(st, info["sha256"])
            if st.st_size > SMALL_FILE_BYTES and record.get(name) == seen and st.st_size == info.get("bytes"):
                done["trusted"].append(name)
                fresh[name] = seen
                continue
            got = sha256_file(path)
            done["hashed"].append(name)
            if got != info["sha256"]:
                raise BundleError(f"{path}: sha256 {got[:16]}... does not match bundle.json "
                                  f"({info['sha256'][:16]}...): "
                                  f"the file changed or was copied incompletely; copy the bundle again or re-export")
            fresh[name] = seen
        if fresh != record:
            _write_record(record_path, self.root, fresh)
        return done


def _stat_key(st: os.stat_result, sha256: str) -> dict:
    return {"sha256": sha256, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino}


def verification_record_path(root: Path) -> Path:
    """BUNDLE/.verified.json, or a per-bundle file in a cache folder when the bundle is read-only."""
    root = Path(root).resolve()
    if os.access(root, os.W_OK):
        return root / RECORD_NAME
    cache = os.environ.get("MOBILE_VLA_CACHE") or os.environ.get("CACHE_DIRECTORY") or "~/.cache/mobile-vla"
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return Path(cache).expanduser() / f"verified-{root.name}-{key}.json"


def _read_record(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data["files"] if data.get("format") == 1 else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no record, or an unreadable one: hash everything (and write a new one)


def _write_record(path: Path, root: Path, files: dict) -> None:
    from runtime.atomic import atomic_write_text  # noqa: PLC0415  drive start-up; written after a full verify

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"format": 1, "bundle": str(Path(root).resolve()), "files": files}) + "\n")
        os.chmod(path, 0o644)  # readable by the service user when root ran the pre-flight
    except OSError as e:  # read-only everywhere: still correct, only the next start hashes again
        logging.getLogger(__name__).warning("could not write the verification record %s: %s; the next start "
                                            "hashes again", path, e)


def read_manifest(root: Path) -> dict:
    root = Path(root)
    path = root / "bundle.json"
    if not root.is_dir():
        raise BundleError(f"{root}: bundle folder not found (export one with python -m export.to_onnx CKPT --out DIR)")
    if not path.is_file():
        raise BundleError(f"{path} is missing: {root} is not a bundle")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from e


def read_driving(root) -> Driving:
    """The bundle's driving record (defaults for a bundle without one), from bundle.json alone."""
    return Bundle(Path(root), read_manifest(Path(root))).driving


def load_bundle(root, verify: str = "quick") -> Bundle:
    """Read and check a bundle. verify: "quick" (default), "full" or "none" (see the module docstring)."""
    bundle = Bundle(Path(root), read_manifest(Path(root)))
    bundle.check_fields()
    bundle.verified = bundle.check_files(verify)
    return bundle
