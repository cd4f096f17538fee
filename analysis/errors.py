"""User errors: what the CLI prints as one line (problem, offending value, fix) instead of a traceback.

Bottom layer of `analysis` (imports nothing from the package). Code raises `UserError` where the cause is
the user's input; `describe` also recognises the library exceptions that user input typically causes
(a missing file, a hub id that does not exist, a file that is not a DuckDB database, a truncated archive)
so the CLI never shows a traceback for them unless `--debug` asks for it.
"""

from __future__ import annotations


class UserError(ValueError):
    """An input the user can fix; the message names the value and the fix."""


# Exception classes (by module prefix and name) that come from user input rather than from a bug.
_USER_MODULES = ("huggingface_hub", "datasets", "requests", "urllib3", "httpx")
# (ValueError and OSError subclasses, e.g. StoreLocked, BadGzipFile, UnicodeDecodeError, are user errors anyway.)
_USER_NAMES = {"HFValidationError", "RepositoryNotFoundError", "LocalEntryNotFoundError", "EntryNotFoundError",
               "DatasetNotFoundError", "DataFilesNotFoundError", "GatedRepoError", "RevisionNotFoundError",
               "IOException", "ConnectionException", "PermissionException", "CatalogException"}


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library errors often span many)."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else text


def describe(exc: BaseException) -> str | None:
    """One line for an exception caused by user input, None for anything that looks like a bug."""
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    if isinstance(exc, (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        return first_line(exc)
    if isinstance(exc, EOFError):
        return f"a compressed input file ends early (truncated download?): {first_line(exc)}"
    if name in _USER_NAMES or module.split(".")[0] in _USER_MODULES:
        msg = first_line(exc)
        if "not a valid DuckDB database file" in msg or ("DuckDB" in msg and "version" in msg):
            return f"{msg} -- point --db at a results file written by `seam` (or a new path)"
        return msg
    if isinstance(exc, (ValueError, OSError)):
        return first_line(exc)
    return None
