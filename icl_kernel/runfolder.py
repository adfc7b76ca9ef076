"""The one run-folder module: create, validate, lock, atomic write, checksums, resume, overwrite.

Every command that writes results (sweep, bound, phenomena, pretrain, transformer-check,
llm-check) goes through :class:`RunFolder`. A run folder looks like::

    runs/<name>/
        .icl-kernel-run    marker: {"project": "icl-kernel", "command": ..., "format_version": 1}
        .lock              fcntl lock file (a second writer is refused)
        config.json        the command's resolved configuration (the run's identity)
        checksums.json     sha256 of every file written through the folder
        ...                the command's own files

Promises, each tested in ``tests/unit/test_runfolder.py``:

- Nothing is created before the caller has validated its whole config (callers validate, then
  call :meth:`RunFolder.create`); names are single path components (:func:`safe_name`).
- A folder is reused or deleted only when it carries the project's marker; a non-empty folder
  without it is never touched. ``overwrite=True`` clears a marked folder only after the new config
  has been validated and the lock taken.
- Files are written to a temporary name in the same folder and renamed (``os.replace``), with the
  umask's permissions; JSON is strict (NaN and infinities become ``null``).
- Every file's sha256 is recorded; :meth:`RunFolder.is_done` is false for a missing or corrupted
  file, so resumption recomputes it; readers name the corrupted file in a one-line error.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from icl_kernel.errors import UserError, one_line

MARKER = ".icl-kernel-run"
LOCK = ".lock"
CHECKSUMS = "checksums.json"
FORMAT_VERSION = 1
_RESERVED = {MARKER, LOCK, CHECKSUMS}


class RunFolderError(UserError):
    """A run folder that cannot be used: foreign, locked, made with another config, corrupted."""


# ------------------------------------------------------------------ names and plain atomic files


def safe_name(name: object, what: str = "--name") -> str:
    """A run name as one path component; refuses '', '.', '..', separators and NUL."""
    s = str(name)
    if (not s or s in (".", "..") or "/" in s or "\\" in s or "\0" in s or s != s.strip()
            or any(ord(c) < 32 for c in s)):
        raise RunFolderError(f"{what} {s!r} is not a valid run name; expected one path component "
                             "such as 'demo' (no '/', not '.', '..' or empty)")
    return s


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    except OSError as exc:
        raise RunFolderError(f"cannot write {path}: {one_line(exc.strerror or exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def strict_json_text(obj) -> str:
    """JSON text with NaN/inf as null and numpy scalars/arrays as plain values (RFC 8259 strict)."""
    return json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (float, np.floating)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, Path):
        return str(o)
    return o


def config_form(config: dict) -> dict:
    """A config as it reads back from config.json (strict JSON round trip), for comparisons."""
    return json.loads(strict_json_text(config))


def atomic_write_json(path: Path | str, obj) -> None:
    atomic_write_bytes(path, strict_json_text(obj).encode())


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_marker(path: Path) -> dict | None:
    m = path / MARKER
    if not m.is_file():
        return None
    try:
        d = json.loads(m.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("project") == "icl-kernel" else None


def is_run_folder(path: Path | str) -> bool:
    """True when ``path`` carries the project's marker."""
    return _read_marker(Path(path)) is not None


# ------------------------------------------------------------------ the run folder


class RunFolder:
    """A locked (when writable) view of one run folder. Use as a context manager."""

    def __init__(self, path: Path, command: str, writable: bool):
        self.path = Path(path)
        self.command = command
        self.writable = writable
        self._lock_fd: int | None = None
        self._sums: dict[str, str] = {}

    # -- opening
    @classmethod
    def create(cls, path: Path | str, *, command: str, config: dict, overwrite: bool = False,
               log=None) -> "RunFolder":
        """Create or resume the run folder ``path`` for ``command`` with ``config``.

        Call only after the config has been fully validated: this is the first write.
        Same command and config: resume (finished files are kept). Otherwise refused, or with
        ``overwrite`` (and only for a folder with the marker) cleared and started anew.
        """
        path = Path(path)
        new_cfg = config_form(config)
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"{path} exists and is not a folder; pick another --name")
        marker = None
        if path.is_dir():
            marker = _read_marker(path)
            if marker is None and _visible_entries(path):
                raise RunFolderError(f"{path} exists and is not an icl-kernel run folder (no {MARKER} marker); "
                                     "nothing was changed; pick another --name or an empty folder")
        else:
            parent = path.parent
            while not parent.exists():
                parent = parent.parent
            if not os.access(parent, os.W_OK | os.X_OK):
                raise RunFolderError(f"cannot create {path}: {parent} is not writable")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RunFolderError(f"cannot create {path}: {one_line(exc.strerror or exc)}") from None
        rf = cls(path, command, writable=True)
        rf._lock()
        try:
            if marker is not None:
                old_cfg = rf._read_config_or_none()
                same = marker.get("command") == command and old_cfg == new_cfg
                if not same:
                    if not overwrite:
                        if marker.get("command") != command:
                            why = f"was made by `{marker.get('command')}`, not `{command}`"
                        elif old_cfg is None:
                            why = "has an unreadable config.json"
                        else:
                            diff = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
                            why = f"was made with another config (differs in {', '.join(diff)})"
                        raise RunFolderError(f"run folder {path} {why}; use another --name, or --overwrite to discard it")
                    if log:
                        log(f"--overwrite: clearing {path}")
                    rf._clear()
                    marker = None
                else:
                    rf._sums = rf._read_sums()
            if marker is None:
                atomic_write_json(path / MARKER, dict(project="icl-kernel", command=command,
                                                      format_version=FORMAT_VERSION))
                rf._sums = {}
                rf.write_json("config.json", new_cfg)
        except BaseException:
            rf.close()
            raise
        return rf

    def _read_config_or_none(self):
        try:
            return json.loads((self.path / "config.json").read_text())
        except (OSError, ValueError):
            return None

    def _read_sums(self) -> dict:
        try:
            d = json.loads((self.path / CHECKSUMS).read_text())
            return {str(k): str(v) for k, v in d.items()} if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {}

    def _lock(self) -> None:
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunFolderError(f"cannot lock {self.path}: {one_line(exc.strerror or exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunFolderError(f"{self.path} is in use by another icl-kernel process (locked); "
                                 "wait for it to finish or pick another --name") from None
        self._lock_fd = fd

    def _clear(self) -> None:
        for entry in self.path.iterdir():
            if entry.name == LOCK:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def close(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing
    def _target(self, rel: str) -> Path:
        if not self.writable:
            raise RunFolderError(f"{self.path} was opened read-only")
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def _record(self, rel: str, data: bytes) -> None:
        self._sums[rel] = _sha256(data)
        atomic_write_json(self.path / CHECKSUMS, self._sums)

    def write_bytes(self, rel: str, data: bytes) -> Path:
        p = self._target(rel)
        atomic_write_bytes(p, data)
        self._record(rel, data)
        return p

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_bytes(rel, text.encode())

    def write_json(self, rel: str, obj) -> Path:
        return self.write_bytes(rel, strict_json_text(obj).encode())

    def savez(self, rel: str, **arrays) -> Path:
        return self.write_bytes(rel, npz_bytes(**arrays))

    @contextlib.contextmanager
    def atomic_path(self, rel: str) -> Iterator[Path]:
        """A temporary path (same folder, same suffix) renamed to ``rel`` when the block succeeds."""
        p = self._target(rel)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix="." + p.stem + ".", suffix=p.suffix)
        os.close(fd)
        try:
            yield Path(tmp)
            data = Path(tmp).read_bytes()
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, p)
            self._record(rel, data)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def remove(self, rel: str) -> None:
        p = self._target(rel)
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
        self._sums = {k: v for k, v in self._sums.items() if k != rel and not k.startswith(rel.rstrip("/") + "/")}
        atomic_write_json(self.path / CHECKSUMS, self._sums)

    # -- reading
    def exists(self, rel: str) -> bool:
        return (self.path / rel).exists()

    def _read_verified(self, rel: str) -> bytes:
        p = self.path / rel
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise RunFolderError(f"{p} not found") from None
        except OSError as exc:
            raise RunFolderError(f"cannot read {p}: {one_line(exc.strerror or exc)}") from None
        want = self._sums.get(rel)
        if want is not None and _sha256(data) != want:
            raise RunFolderError(f"{p} is corrupted (its sha256 does not match {CHECKSUMS}); "
                                 "delete it and rerun the command to recompute it")
        return data

    def is_done(self, rel: str) -> bool:
        """True when ``rel`` exists and matches its recorded checksum (corrupted files are not done)."""
        p = self.path / rel
        want = self._sums.get(rel)
        if want is None or not p.is_file():
            return False
        try:
            return _sha256(p.read_bytes()) == want
        except OSError:
            return False

    def is_corrupted(self, rel: str) -> bool:
        """True when ``rel`` exists but does not match its recorded checksum (or has none)."""
        return (self.path / rel).is_file() and not self.is_done(rel)

    def read_bytes(self, rel: str) -> bytes:
        return self._read_verified(rel)

    def read_json(self, rel: str):
        data = self._read_verified(rel)
        try:
            return json.loads(data.decode())
        except (UnicodeDecodeError, ValueError) as exc:
            raise RunFolderError(f"{self.path / rel} is not valid JSON ({one_line(exc)}); "
                                 "delete it and rerun the command") from None

    def load_npz(self, rel: str) -> dict:
        data = self._read_verified(rel)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as exc:  # zipfile/npy format errors of many kinds
            raise RunFolderError(f"{self.path / rel} is not a readable .npz file ({one_line(exc)}); "
                                 "delete it and rerun the command") from None

    def config(self) -> dict:
        return self.read_json("config.json")


def _visible_entries(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.name != LOCK]


def open_existing(path: Path | str, command: str | tuple[str, ...] | None = None, *,
                  write: bool = False) -> RunFolder:
    """Open a finished or partial run folder to read (``write=True``: also to add files, locked)."""
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"run folder {path} not found")
    marker = _read_marker(path)
    if marker is None:
        raise RunFolderError(f"{path} is not an icl-kernel run folder (no {MARKER} marker)")
    want = (command,) if isinstance(command, str) else command
    if want and marker.get("command") not in want:
        raise RunFolderError(f"{path} was made by `{marker.get('command')}`; expected a run folder of "
                             f"`{' or '.join(want)}`")
    rf = RunFolder(path, str(marker.get("command")), writable=write)
    if write:
        rf._lock()
    rf._sums = rf._read_sums()
    return rf
