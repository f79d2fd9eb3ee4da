"""Export a workspace for the sites, and import one safely.

An archive carries only what every site needs to run the same plan: ``plan/plan.yaml`` (and
the workspace defaults files it references), ``src/``, ``requirements.txt`` and a
``manifest.json`` with each file's SHA-256. Never keys, certificates, data, models or logs,
and never ``plan/data.yaml`` (data paths are per site).

Import checks every entry before writing anything, extracts into a temporary directory,
verifies the manifest and the plan hash there, and only then moves the workspace into place.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from accord import __version__
from accord.collaborator.data_config import HEADER as DATA_CONFIG_HEADER
from accord.errors import AccordError
from accord.files import atomic_path
from accord.pki.secrets import private_key_problem
from accord.plan.identity import compiled_code_problem, file_digest, source_files
from accord.plan.loader import SECTIONS, Plan, load_plan, read_yaml
from accord.workspace.create import LAYOUT

MANIFEST = "manifest.json"
PLAN = "plan/plan.yaml"
DATA_CONFIG = "plan/data.yaml"
TOP_FILES = frozenset({"requirements.txt", MANIFEST})
TOP_DIRS = frozenset({"plan", "src"})
SECRET_SUFFIXES = frozenset({".key", ".pem", ".p12", ".pfx"})

MAX_ENTRIES = 10_000
MAX_TOTAL_BYTES = 512 * 1024 * 1024
MAX_RATIO = 200
RATIO_FLOOR_BYTES = 1024 * 1024  # small files may compress well; ratio checked above this size
COPY_CHUNK = 1024 * 1024
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so the same workspace exports to the same bytes

EMPTY_DATA_CONFIG = DATA_CONFIG_HEADER + "{}\n"


# --------------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportResult:
    """Where the archive was written, the plan and workspace hashes it carries and the files in it."""

    path: Path
    plan_hash: str
    workspace_hash: str
    files: tuple[str, ...]


def _defaults_files(workspace: Path) -> list[Path]:
    """Workspace files the plan's sections name in ``defaults`` (Accord's own are not copied)."""
    raw = read_yaml(workspace / PLAN)
    found: list[Path] = []
    for name in SECTIONS:
        section = raw.get(name)
        ref = section.get("defaults") if isinstance(section, dict) else None
        if not isinstance(ref, str) or not (workspace / ref).is_file():
            continue
        path = (workspace / ref).resolve()
        if not path.is_relative_to(workspace / "plan") and not path.is_relative_to(workspace / "src"):
            raise AccordError(
                f"{name}.defaults names {ref}, outside the workspace's plan/ and src/",
                "move the defaults file under plan/ so the sites receive it",
            )
        found.append(path)
    return found


def secret_problem(name: str, data: bytes) -> str | None:
    """Why a file of the archive may not travel (it is or holds a private key), or None."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in SECRET_SUFFIXES:
        return f"a {suffix} file may hold a key"
    why = private_key_problem(data)
    return f"it {why}" if why else None


def _check_not_secret(path: Path, arcname: str) -> None:
    """Refuse to export a file that is or holds a private key."""
    why = secret_problem(arcname, path.read_bytes())
    if why:
        raise AccordError(f"refusing to export {arcname}: {why}", "move it out of the workspace's plan/ and src/")


def export_files(workspace: Path) -> dict[str, Path]:
    """The archive names and files a site needs, checked for secrets."""
    workspace = workspace.resolve()
    chosen = [workspace / PLAN, *_defaults_files(workspace), *source_files(workspace)]
    if (workspace / "requirements.txt").is_file():
        chosen.append(workspace / "requirements.txt")
    files: dict[str, Path] = {}
    for path in chosen:
        arcname = path.relative_to(workspace).as_posix()
        if arcname == DATA_CONFIG:
            continue
        _check_not_secret(path, arcname)
        files[arcname] = path
    return dict(sorted(files.items()))


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def export_workspace(workspace: str | Path, output: str | Path | None = None, force: bool = False) -> ExportResult:
    """Write the workspace's archive (default: ``<parent>/<workspace name>.zip``)."""
    root = Path(workspace).resolve()
    plan = load_plan(root / PLAN, workspace=root)
    target = Path(output).resolve() if output else root.parent / f"{root.name}.zip"
    if target.exists() and not force:
        raise AccordError(f"{target} already exists", "add --force to overwrite it, or choose --output")
    files = export_files(root)
    identity = plan.workspace_hash()
    manifest = {
        "accord_version": __version__,
        "plan_hash": plan.hash,
        "workspace_hash": identity,
        "files": {name: file_digest(path, "sha256") for name, path in files.items()},
    }
    with atomic_path(target) as partial:
        with zipfile.ZipFile(partial, "w") as archive:
            for name, path in files.items():
                archive.writestr(_zip_info(name), path.read_bytes())
            archive.writestr(_zip_info(MANIFEST), json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return ExportResult(target, plan.hash, identity, tuple(files))


# --------------------------------------------------------------------------- import


@dataclass(frozen=True)
class ImportResult:
    """The new workspace, its plan and workspace hash, and the manifest's Accord version."""

    workspace: Path
    plan: Plan
    workspace_hash: str
    exported_with: str


def _refuse(archive: Path, entry: str, why: str) -> AccordError:
    return AccordError(f"{archive}: refusing entry {entry!r}: {why}; nothing was written", "ask for a clean export")


_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_name(name: str) -> str | None:
    """Why an entry name could land outside the folder it is extracted to, or None."""
    if "\\" in name or "\x00" in name:
        return "backslash or NUL in the name"
    if name.startswith("/") or _DRIVE.match(name):
        return "absolute path or drive letter"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "'..' in the path (outside the workspace)"
    if any(p in ("", ".") for p in parts):
        return "empty or '.' path component"
    return None


def _check_name(name: str) -> str | None:
    """Why an entry name is unsafe or not allowed, or None."""
    unsafe = unsafe_name(name)
    if unsafe:
        return unsafe
    parts = name.rstrip("/").split("/")
    top_level_file = len(parts) == 1 and not name.endswith("/")
    if top_level_file and name not in TOP_FILES:
        return f"not an allowed top-level file ({', '.join(sorted(TOP_FILES))})"
    if not top_level_file and parts[0] not in TOP_DIRS:
        return f"outside the allowed folders ({', '.join(sorted(TOP_DIRS))})"
    if name == DATA_CONFIG:
        return "plan/data.yaml is per site and never travels"
    return compiled_code_problem(name)


def entry_problem(info: zipfile.ZipInfo) -> str | None:
    """Why an entry's kind or size is refused, or None."""
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "not a regular file or folder"
    if info.flag_bits & 0x1:
        return "encrypted"
    if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        return f"compression ratio over {MAX_RATIO}:1 (zip bomb?)"
    return None


def check_archive(archive: Path, infos: Iterable[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    """Every check that needs no extraction; returns the file entries (folders dropped)."""
    infos = list(infos)
    if len(infos) > MAX_ENTRIES:
        raise AccordError(
            f"{archive}: {len(infos)} entries, more than {MAX_ENTRIES}; nothing was written", "ask for a clean export"
        )
    seen: set[str] = set()
    total = 0
    for info in infos:
        why = _check_name(info.filename) or entry_problem(info)
        key = info.filename.rstrip("/").casefold()
        if why is None and key in seen:
            why = "duplicate name"
        if why:
            raise _refuse(archive, info.filename, why)
        seen.add(key)
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise _refuse(archive, info.filename, f"total size over {MAX_TOTAL_BYTES // 2**20} MiB (zip bomb?)")
    files = [i for i in infos if not i.is_dir()]
    names = {i.filename.casefold() for i in files}
    for info in files:
        parents = PurePosixPath(info.filename).parents
        clash = next((str(p) for p in parents if str(p).casefold() in names), None)
        if clash:
            raise _refuse(archive, clash, f"is a file but also a folder of {info.filename}")
    for required in (MANIFEST, PLAN):
        if required.casefold() not in names:
            raise AccordError(
                f"{archive}: no {required}; nothing was written", "is this an `fx workspace export` archive?"
            )
    return files


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, root: Path) -> None:
    """Copy one checked entry under ``root``, never past its declared size."""
    target = root / info.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with archive.open(info) as source, target.open("xb") as sink:
        for chunk in iter(lambda: source.read(COPY_CHUNK), b""):
            written += len(chunk)
            if written > info.file_size:
                raise AccordError(f"entry {info.filename!r} is larger than it declares; nothing was written")
            sink.write(chunk)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise AccordError(f"{MANIFEST} is not valid JSON: {exc}; nothing was written") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise AccordError(f"{MANIFEST} has no 'files' mapping; nothing was written", "ask for a clean export")
    return manifest


def _verify(root: Path, files: list[zipfile.ZipInfo], archive: Path) -> dict:
    """Every extracted file is in the manifest with the same SHA-256, and the reverse."""
    manifest = _read_manifest(root / MANIFEST)
    listed: dict = manifest["files"]
    present = {i.filename for i in files} - {MANIFEST}
    for name in sorted(present | set(listed)):
        if name not in listed:
            raise _refuse(archive, name, "not listed in the manifest")
        if name not in present:
            raise _refuse(archive, name, "listed in the manifest but missing")
        if file_digest(root / name, "sha256") != listed[name]:
            raise _refuse(archive, name, "SHA-256 differs from the manifest")
    return manifest


def place_workspace(staging: Path, target: Path) -> None:
    """Move the verified workspace to ``target`` (an empty existing folder is replaced)."""
    if target.is_dir():
        target.rmdir()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staging), str(target))


def import_workspace(archive: str | Path, prefix: str | Path | None = None) -> ImportResult:
    """Check, extract, verify and place an exported workspace at ``prefix`` (default ``./<stem>``)."""
    source = Path(archive).resolve()
    target = Path(prefix).resolve() if prefix else Path.cwd() / source.stem
    if not source.is_file():
        raise AccordError(f"archive {source} does not exist", "check --archive")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise AccordError(f"{target} already exists and is not empty", "choose a new --prefix")
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AccordError(f"{source} is not a readable zip archive: {exc}") from exc
    with zf, tempfile.TemporaryDirectory(prefix="accord-import-") as tmp:
        files = check_archive(source, zf.infolist())
        staging = Path(tmp) / "workspace"
        staging.mkdir()
        try:
            for info in files:
                _extract(zf, info, staging)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise AccordError(f"{source}: corrupt entry ({exc}); nothing was written", "ask for a clean export") from exc
        manifest = _verify(staging, files, source)
        for info in files:
            why = secret_problem(info.filename, (staging / info.filename).read_bytes())
            if why:
                raise AccordError(
                    f"{source}: refusing entry {info.filename!r}: {why}; nothing was written",
                    "ask for a clean export; a private key that travelled must be treated as exposed",
                )
        for folder in LAYOUT:
            (staging / folder).mkdir(exist_ok=True)
        (staging / DATA_CONFIG).write_text(EMPTY_DATA_CONFIG, encoding="utf-8")
        try:
            plan = load_plan(staging / PLAN, workspace=staging)
        except AccordError as exc:
            raise AccordError(f"{source}: its plan does not load ({exc}); nothing was written") from exc
        exported = str(manifest.get("accord_version", "unknown"))
        if plan.hash != manifest.get("plan_hash"):
            raise AccordError(
                f"{source}: the plan's hash here ({plan.hash[:16]}...) differs from the exporter's "
                f"({str(manifest.get('plan_hash'))[:16]}...); nothing was written",
                f"exported with Accord {exported}, this is {__version__}: use the same version",
            )
        identity = plan.workspace_hash()
        if manifest.get("workspace_hash", identity) != identity:
            raise AccordError(
                f"{source}: the workspace hash here ({identity[:16]}...) differs from the exporter's "
                f"({str(manifest.get('workspace_hash'))[:16]}...); nothing was written",
                f"exported with Accord {exported}, this is {__version__}: use the same version",
            )
        if plan.model.hash is not None:
            (staging / PLAN).chmod(0o444)
        place_workspace(staging, target)
    return ImportResult(target, load_plan(target / PLAN, workspace=target), identity, exported)
