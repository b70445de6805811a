"""Output step: mirrored output names that can never escape OUTDIR, atomic writes, and cleanup of torn temp files.

Naming rule: the input's path relative to its root is mirrored under OUTDIR and the output suffix is appended
to the *full* file name, so ``a/invoice.pdf`` -> ``OUTDIR/a/invoice.pdf.md``. Keeping the original extension
means ``x.pdf`` and ``x.png`` in one folder never write the same file, and the output name says its source.

A path component is rewritten only when it is unsafe: ``..``, control characters (NUL, newline, ...),
backslashes, undecodable bytes, a top-level ``.internvl`` folder (our state), or a name too long for the file
system. Unsafe characters become ``_`` and a short hash of the original name is appended (``~1a2b3c4d5e``), so
two different hostile names never map to the same output. Absolute paths lose their anchor.

Temp files are ``.<name>.tmp-<8 hex>`` in the target's own folder (same file system, so ``os.replace`` is
atomic); `cleanup_stale_temps` removes those a SIGKILL left behind and must run only under the RunLock.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from pathlib import Path, PurePosixPath

from ..documents.inputs import STATE_DIR_NAME
from ..errors import InputFileError, OutputError

NAME_MAX = 255           # bytes per path component on ext4/xfs/btrfs/APFS
PATH_MAX = 4096          # bytes per whole path on Linux
_TEMP_MARK = ".tmp-"
_TEMP_OVERHEAD = len(".") + len(_TEMP_MARK) + 8   # what a temp name adds to the final name
_TEMP_RE = re.compile(r"\..+\.tmp-[0-9a-f]{8}", re.DOTALL)
# Control characters break shell pipelines and logs; backslashes are separators on Windows shares;
# lone surrogates are undecodable bytes that the UTF-8 ledger cannot store.
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f\\\\\ud800-\udfff]")
_HASH_LEN = 10
# `-o NAME` with one of these endings names one output file (for a single document), not a directory.
FILE_SUFFIXES = (".md", ".markdown", ".txt", ".jsonl", ".json", ".csv", ".pdf", ".hocr")
_OUTPUT_HINT = "-o takes a directory, or for a single document a file ending in " + ", ".join(FILE_SUFFIXES)


def names_a_file(path: Path) -> bool:
    """Whether `-o path` means one output file: a data suffix, and not an existing directory."""
    return Path(path).suffix.lower() in FILE_SUFFIXES and not Path(path).is_dir()


def prepare_output_directory(path: Path) -> None:
    """Creates OUTDIR if needed; OutputError (its own exit code) when it cannot be used, before any work starts."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError("is a file, not a directory", path=path, hint=_OUTPUT_HINT)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output directory ({exc.strerror or exc})", path=path) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError("the output directory is not writable", path=path)


def prepare_output_file(path: Path) -> None:
    """The same checks for `-o FILE`: its folder must exist or be creatable, and be writable."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise OutputError("exists and is not a regular file", path=path, hint=_OUTPUT_HINT)
    prepare_output_directory(path.parent if str(path.parent) else Path(os.curdir))


def output_path(out_dir: Path, relative: PurePosixPath | str, suffix: str) -> Path:
    """OUTDIR / relative + suffix, with every component made safe; raises InputFileError if the path is too long."""
    _check_suffix(suffix)
    parts = [p for p in PurePosixPath(relative).parts if not p.startswith("/")]
    if not parts:
        raise ValueError(f"empty relative path {str(relative)!r}")
    last_budget = NAME_MAX - _TEMP_OVERHEAD - _nbytes(suffix)
    safe = [_safe_name(p, NAME_MAX, reserved=(i == 0)) for i, p in enumerate(parts[:-1])]
    safe.append(_safe_name(parts[-1], last_budget) + suffix)
    path = Path(out_dir).joinpath(*safe)
    _check_inside(Path(out_dir), path)
    if len(os.fsencode(os.path.abspath(path))) >= PATH_MAX:
        raise InputFileError(
            "the output path would be longer than the file system allows",
            path=str(relative), hint="use a shorter --output directory or a shallower input tree",
        )
    return path


def _check_suffix(suffix: str) -> None:
    if not suffix.startswith(".") or len(suffix) < 2 or "/" in suffix or _UNSAFE_CHARS.search(suffix):
        raise ValueError(f"output suffix must look like '.md', got {suffix!r}")


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _safe_name(name: str, budget: int, reserved: bool = False) -> str:
    """`name` unchanged when safe, else a cleaned, truncated name plus a hash of the original."""
    is_reserved = reserved and name.casefold() == STATE_DIR_NAME
    if not (is_reserved or name == ".." or _UNSAFE_CHARS.search(name) or _nbytes(name) > budget):
        return name
    tag = "~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    clean = _UNSAFE_CHARS.sub("_", name)
    return _truncate_utf8(clean, budget - len(tag)) + tag


def _truncate_utf8(text: str, max_bytes: int) -> str:
    # Cut on a byte budget, dropping a multi-byte character split by the cut.
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def _check_inside(out_dir: Path, path: Path) -> None:
    # Sanitising already guarantees this; the check keeps a future change from silently breaking it.
    root = os.path.normpath(os.path.abspath(out_dir))
    target = os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([root, target]) != root or target == root:
        raise ValueError(f"output path {target!r} escapes {root!r}")


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` so that readers see the old file or the complete new one, never a torn one."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, os.replace, fsync the folder; the temp is removed on any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(_temp_name(path.name))
    # 0o666 minus the umask, like a normal file (tempfile would make it 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _temp_name(name: str) -> str:
    stem = _truncate_utf8(name, NAME_MAX - _TEMP_OVERHEAD) if _nbytes(name) > NAME_MAX - _TEMP_OVERHEAD else name
    return f".{stem}{_TEMP_MARK}{secrets.token_hex(4)}"


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some file systems refuse fsync on a directory, which is harmless.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temp_name(name: str) -> bool:
    """Whether `name` is one of our temp files (hidden, so input discovery never picks it up either)."""
    return _TEMP_RE.fullmatch(name) is not None


def cleanup_stale_temps(out_dir: Path) -> list[Path]:
    """Delete temp files left by a killed run; call only while holding the RunLock, or a live write loses its temp."""
    removed: list[Path] = []
    for depth, (dirpath, dirnames, filenames) in enumerate(os.walk(out_dir)):
        if depth == 0:  # os.walk yields the top folder first; the ledger's folder holds no temps of ours
            dirnames[:] = [d for d in dirnames if d != STATE_DIR_NAME]
        for name in filenames:
            if is_temp_name(name):
                target = Path(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
                    removed.append(target)
    return removed
