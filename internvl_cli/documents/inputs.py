"""Input discovery step: turns PATH arguments (files, folders, globs, `-` for stdin) into an ordered list of documents.

Rules (the CLI's help and README describe these):

* A **file** argument is always returned, whatever its extension (the loader then says precisely what is wrong
  with it); its ``relative`` path is its name.
* A **folder** argument is walked recursively; ``relative`` is the path below that folder. Hidden files and
  folders (leading ``.``) are skipped silently, like ``ls`` and shell globs do (this also skips macOS ``._x.pdf``
  litter and our own temp files). Symlinked folders are not followed, the output folder and any other internvl
  output folder (one holding ``.internvl/``) are not entered; those are noted in ``Discovery.skipped``.
* A **glob** (``*``, ``?``, ``[...]``, ``**`` for any depth) is used only when no file of that exact name
  exists; ``relative`` is the path below its non-glob prefix (``in/**/*.pdf`` -> below ``in``). A glob that matches
  no file at all is an error, as in the shell, so a typo does not pass silently.
* ``-`` reads paths from stdin, NUL-separated if the input contains a NUL (``find -print0``), else one per line;
  blank lines are ignored; entries are literal paths (never globs). A listed file keeps the path it was listed
  with, made relative: ``./a/x.pdf`` -> ``a/x.pdf``, ``/srv/in/x.pdf`` -> ``srv/in/x.pdf`` (leading ``..`` dropped).
  Unlike a common-parent rule this is stable when the list grows between cron runs, so output names never move.
  A listed folder is walked like a folder argument.
* Files found by walking a folder or a glob with an unsupported extension are skipped with a note.
* All globs are case-insensitive (``*.pdf`` also finds ``SCAN.PDF`` from Windows scanners).
* ``--include``/``--exclude`` globs are matched against the relative path and the
  basename; they apply to every document, explicit files included. A file must match some include (if any)
  and no exclude; an excluded folder is not entered.
* Problems with what the user named (missing path, broken link, glob matching nothing, unreadable folder,
  a special file, two inputs that would write the same output) are returned in ``Discovery.errors`` as
  InputFileError (exit code 3) instead of raising, so the run reports them and still processes the rest.
* Order is deterministic: arguments in the order given, each one's documents sorted by relative path.
  The same file reached twice (same real path) is kept once, at its first occurrence.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Sequence, TextIO

from ..errors import InputFileError

# An output folder keeps its ledger and lock in this folder; discovery never walks into such output folders.
STATE_DIR_NAME = ".internvl"
SUPPORTED_EXTENSIONS = frozenset({".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif",
                                  ".heic", ".heif", ".hif", ".avif"})
STDIN_ARG = "-"
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputDoc:
    """One document to process: where to read it and the relative path its output name mirrors."""

    path: Path                  # absolute (symlinks not resolved, so messages show what the user sees)
    root: Path                  # absolute folder that `relative` is taken from
    relative: PurePosixPath


@dataclass(frozen=True)
class Skipped:
    """Something passed over while walking, with a human reason; a note, not a failure."""

    path: Path
    reason: str


@dataclass
class Discovery:
    docs: list[InputDoc] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[InputFileError] = field(default_factory=list)


def is_supported(path: str | os.PathLike[str]) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in SUPPORTED_EXTENSIONS


def discover(
    args: Sequence[str],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    stdin: TextIO | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
) -> Discovery:
    """Expand PATH arguments into documents; see the module docstring for every rule."""
    walker = _Walker(Discovery(), _Filters(include, exclude), _identity(out_dir))
    stdin_read = False
    for arg in args:
        if arg == STDIN_ARG:
            if not stdin_read:
                stdin_read = True
                for entry in read_path_list(stdin if stdin is not None else sys.stdin):
                    walker.add_stdin_entry(entry)
        else:
            walker.add_arg(arg)
    return walker.finish()


def read_path_list(stream: TextIO) -> list[str]:
    """Paths from a stream: NUL-separated if it contains a NUL, else one per line; blank entries dropped."""
    buffer = getattr(stream, "buffer", None)
    # Raw bytes + fsdecode keep file names that are not valid UTF-8, as the file system stores them.
    data = os.fsdecode(buffer.read()) if buffer is not None else stream.read()
    if "\0" in data:
        entries = data.split("\0")
    else:
        entries = [line[:-1] if line.endswith("\r") else line for line in data.split("\n")]
    return [e for e in entries if e.strip()]


def _identity(path: str | os.PathLike[str] | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st else None


class _Filters:
    """--include/--exclude, matched against the relative path and the basename."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str]):
        self.include = [(p, glob_regex(_strip_dot(p))) for p in include]
        self.exclude = [(p, glob_regex(_strip_dot(p))) for p in exclude]

    def excluded_by(self, relative: PurePosixPath) -> str | None:
        """The first exclude pattern matching, or None."""
        return next((p for p, rx in self.exclude if _matches(rx, relative)), None)

    def rejects(self, relative: PurePosixPath) -> str | None:
        """Why the file is filtered out, or None if it passes."""
        hit = self.excluded_by(relative)
        if hit is not None:
            return f"excluded by --exclude {hit!r}"
        if self.include and not any(_matches(rx, relative) for _, rx in self.include):
            return "matches no --include pattern"
        return None


def _strip_dot(pattern: str) -> str:
    return pattern[2:] if pattern.startswith("./") else pattern


def _matches(regex: re.Pattern[str], relative: PurePosixPath) -> bool:
    return bool(regex.fullmatch(relative.as_posix()) or regex.fullmatch(relative.name))


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob: `*` and `?` stay within one folder, `**/` is any number of folders, `**` anything."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        token, i = _glob_token(pattern, i)
        out.append(token)
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _glob_token(pattern: str, i: int) -> tuple[str, int]:
    if pattern.startswith("**/", i):
        return "(?:.*/)?", i + 3
    if pattern.startswith("**", i):
        return ".*", i + 2
    char = pattern[i]
    if char == "*":
        return "[^/]*", i + 1
    if char == "?":
        return "[^/]", i + 1
    if char == "[":
        return _glob_class(pattern, i)
    return re.escape(char), i + 1


def _glob_class(pattern: str, i: int) -> tuple[str, int]:
    j = i + 1
    negate = j < len(pattern) and pattern[j] in "!^"
    j += negate
    if j < len(pattern) and pattern[j] == "]":  # a ']' first in the class is literal, as in fnmatch
        j += 1
    end = pattern.find("]", j)
    if end < 0:
        return re.escape("["), i + 1
    # Escape what `re` treats specially inside a set ('[', '&&', '~~', '||' warn or change meaning).
    body = "".join("\\" + c if c in "\\[]&~|^" else c for c in pattern[i + 1 + negate:end])
    return ("[^/" + body + "]" if negate else "[" + body + "]"), end + 1


def _split_glob(arg: str) -> tuple[str, str]:
    """('in/sub', '**/*.pdf') for 'in/sub/**/*.pdf': the non-glob prefix folder and the rest."""
    parts = PurePosixPath(arg).parts
    first = next(i for i, p in enumerate(parts) if _GLOB_CHARS.search(p))
    prefix = str(PurePosixPath(*parts[:first])) if first else "."
    return prefix, "/".join(parts[first:])


class _Walker:
    """Accumulates documents, notes and errors across arguments, de-duplicating by real path."""

    def __init__(self, result: Discovery, filters: _Filters, out_dir_id: tuple[int, int] | None):
        self.result = result
        self.filters = filters
        self.out_dir_id = out_dir_id
        self.seen: set[str] = set()

    # -- argument kinds -------------------------------------------------------------------------

    def add_arg(self, arg: str) -> None:
        if arg == "":
            self._error("an empty path was given", arg)
        elif os.path.isdir(arg):
            self._add_tree(os.path.abspath(arg))
        elif os.path.lexists(arg):
            self._add_file(os.path.abspath(arg), PurePosixPath(os.path.basename(os.path.abspath(arg))))
        elif _GLOB_CHARS.search(arg):
            self._add_glob(arg)
        else:
            self._error("file not found", arg)

    def add_stdin_entry(self, entry: str) -> None:
        if os.path.isdir(entry):
            self._add_tree(os.path.abspath(entry))
        elif os.path.lexists(entry):
            self._add_file(os.path.abspath(entry), _as_listed(entry))
        else:
            self._error("file not found (listed on stdin)", entry)

    def _add_file(self, path: str, relative: PurePosixPath) -> None:
        if not os.path.exists(path):
            self._error("file not found (broken symbolic link)", path)
        elif not os.path.isfile(path):
            self._error("not a regular file (a pipe, socket or device cannot be read as a document)", path)
        else:
            reason = self.filters.rejects(relative)
            if reason:
                self._skip(path, reason)
            else:
                self._keep([(path, relative)], root=str(Path(path).parents[len(relative.parts) - 1]))

    def _add_tree(self, root: str) -> None:
        found = [(p, r) for p, r in self._walk(root, max_depth=None) if self._accept_walked(p, r)]
        self._keep(found, root)

    def _add_glob(self, arg: str) -> None:
        prefix, rest = _split_glob(arg)
        root = os.path.abspath(prefix)
        regex = glob_regex(rest)
        max_depth = None if "**" in rest else rest.count("/") + 1
        matched = [(p, r) for p, r in self._walk(root, max_depth, quiet=True) if regex.fullmatch(r.as_posix())]
        if not matched:
            self._error("no file matches this pattern", arg)
            return
        self._keep([(p, r) for p, r in matched if self._accept_walked(p, r)], root)

    # -- walking ------------------------------------------------------------------------------

    def _walk(self, root: str, max_depth: int | None, quiet: bool = False) -> Iterator[tuple[str, PurePosixPath]]:
        """Regular files below `root` (any extension), with notes for what is not entered."""
        if not os.path.isdir(root):
            return
        stack: list[tuple[str, PurePosixPath]] = [(root, PurePosixPath())]
        while stack:
            folder, rel = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self._error(f"cannot read folder: {exc.strerror or exc}", folder)
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                child = rel / entry.name
                if entry.is_dir(follow_symlinks=False):
                    if self._enter(entry, child, max_depth, quiet):
                        stack.append((entry.path, child))
                elif entry.is_file():
                    yield entry.path, child
                elif not quiet:
                    self._skip(entry.path, _odd_entry_reason(entry))

    def _enter(self, entry: os.DirEntry[str], rel: PurePosixPath, max_depth: int | None, quiet: bool) -> bool:
        """Whether to descend into a sub-folder; notes why not, except for mere depth limits."""
        if max_depth is not None and len(rel.parts) >= max_depth:
            return False
        reason = self._folder_skip_reason(entry, rel)
        if reason and not quiet:
            self._skip(entry.path, reason)
        return reason is None

    def _folder_skip_reason(self, entry: os.DirEntry[str], rel: PurePosixPath) -> str | None:
        st = entry.stat(follow_symlinks=False)
        if self.out_dir_id == (st.st_dev, st.st_ino):
            return "the output folder"
        if os.path.isdir(os.path.join(entry.path, STATE_DIR_NAME)):
            return "an internvl output folder"
        hit = self.filters.excluded_by(rel)
        return f"excluded by --exclude {hit!r}" if hit is not None else None

    def _accept_walked(self, path: str, relative: PurePosixPath) -> bool:
        if self.filters.rejects(relative) is not None:
            return False  # the user filtered it out on purpose; a note per file would be noise
        if not is_supported(path):
            ext = os.path.splitext(path)[1] or "(none)"
            self._skip(path, f"unsupported file type {ext!r} (supported: {' '.join(sorted(SUPPORTED_EXTENSIONS))})")
            return False
        return True

    # -- results ------------------------------------------------------------------------------

    def _keep(self, found: Iterable[tuple[str, PurePosixPath]], root: str) -> None:
        for path, relative in sorted(found, key=lambda pr: pr[1].parts):
            real = os.path.realpath(path)
            if real not in self.seen:
                self.seen.add(real)
                self.result.docs.append(InputDoc(Path(path), Path(root), relative))

    def _skip(self, path: str, reason: str) -> None:
        self.result.skipped.append(Skipped(Path(path), reason))

    def _error(self, message: str, path: str) -> None:
        self.result.errors.append(InputFileError(message, path=path))

    def finish(self) -> Discovery:
        """Drop (as errors) later documents whose relative path, hence output name, clashes with an earlier one."""
        first: dict[PurePosixPath, InputDoc] = {}
        kept: list[InputDoc] = []
        for doc in self.result.docs:
            other = first.setdefault(doc.relative, doc)
            if other is doc:
                kept.append(doc)
            else:
                self.result.errors.append(InputFileError(
                    f"would write the same output as {other.path} (both are {doc.relative.as_posix()!r} "
                    "relative to their input)", path=doc.path,
                    hint="pass a common parent folder instead, or run them with different --output folders",
                ))
        self.result.docs = kept
        return self.result


def _as_listed(entry: str) -> PurePosixPath:
    """The stdin path made relative: anchor and leading '..' dropped, '.' and inner '..' collapsed lexically."""
    parts = [p for p in PurePosixPath(os.path.normpath(entry)).parts if p != ".." and not p.startswith("/")]
    return PurePosixPath(*parts) if parts else PurePosixPath(os.path.basename(os.path.abspath(entry)))


def _odd_entry_reason(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "symbolic link to a folder (not followed)" if entry.is_dir() else "broken symbolic link"
    return "not a regular file"
