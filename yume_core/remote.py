"""Object storage: fsspec URLs (`s3://bucket/prefix`, `gs://...`, local paths) for inputs and outputs.

Inputs are read where they are: a CSV is fetched once, a video is opened as a ranged file (PyAV reads only what it
needs to probe it) or fetched whole when a whole copy is what the reader wants (`input_file`).

Outputs go through a **mirror**: a flow whose output is a URL runs against a local staging folder (`open_output`)
that mirrors the URL. Every file that appears atomically in the staging folder (`yume_core.storage.atomic_path`) is
uploaded whole right after (`push_if_mirrored`), so the bucket receives files in the order they were finished, and an
object that exists is complete (a PUT is atomic). That keeps one code path for local and object storage: stages
keep writing with `atomic_path` into folders, and readers that want local files (pyarrow, PyAV, decord, tarfile)
keep them. A task on another node that needs a file another node wrote (a batch part, a video) fetches it on
demand (`ensure_local`), and a run starting on a fresh machine first fetches the run's small state (batch parts,
index parts, completion markers, manifests, step markers; not the tars and videos), so it resumes where the last
run stopped, wherever that ran.

Credentials and endpoint come from the standard environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `GOOGLE_APPLICATION_CREDENTIALS`, ...) or from `--storage-options`
(JSON of fsspec filesystem arguments), which commands put in `YUME_STORAGE_OPTIONS` so that worker processes (a
process pool, Ray workers started from this environment) use the same settings.

Failures. A store under load answers 503 SlowDown, a network drops connections: S3 requests are retried with
backoff, by botocore in its adaptive mode (exponential backoff with jitter, and a client-side rate that slows down
while the store throttles) on top of s3fs's own tries (`S3_RETRIES`). A request that still fails raises
`StorageError`: the object's URL, the store's error code and how many attempts were made, which the CLI prints as
one line. A missing object stays FileNotFoundError: callers treat it as "not done yet".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from yume_core.errors import InputError

OPTIONS_ENV = "YUME_STORAGE_OPTIONS"
STAGING_ENV = "YUME_DATA_STAGING"
MIRROR_FILE = ".yume-remote.json"  # in a staging folder's root: the URL it mirrors
MIRRORS_ENV = "YUME_DATA_MIRRORS"  # JSON {staging folder: URL} of the outputs this run opened, for its workers
PAYLOAD_SUFFIXES = (".tar", ".mp4")  # big files a resuming run does not fetch (markers say they are done)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str | os.PathLike | None) -> bool:
    """True for a URL of a remote filesystem (`s3://`, `gs://`, `memory://` ...); `file://` and plain paths are
    local."""
    return isinstance(path, str) and bool(_URL.match(path)) and not path.startswith("file://")


def storage_options() -> dict[str, Any]:
    """fsspec filesystem arguments from `YUME_STORAGE_OPTIONS` (JSON; empty: the standard environment decides)."""
    text = os.environ.get(OPTIONS_ENV, "").strip()
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{OPTIONS_ENV} (--storage-options) is not JSON: {e}") from None
    if not isinstance(options, dict):
        raise ValueError(f"{OPTIONS_ENV} (--storage-options) must be a JSON object, got {type(options).__name__}")
    return options


def set_storage_options(options: str | dict | None) -> None:
    """Use these fsspec arguments for every URL from now on, in this process and the workers it starts."""
    if options is None:
        return
    os.environ[OPTIONS_ENV] = options if isinstance(options, str) else json.dumps(options)
    storage_options()  # a malformed value fails here, at the command line
    _filesystem.cache_clear()


# botocore's retries of one S3 request (the first attempt included); s3fs tries each request up to its `retries`
# (5) times around them when the store says SlowDown, so a throttled upload gets up to 25 attempts, about a minute.
S3_RETRIES = {"mode": "adaptive", "total_max_attempts": 5}
AWS_RETRY_ENV = ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS")  # botocore's own settings, which then decide


def _with_retries(protocol: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` with S3_RETRIES for an S3 filesystem whose retries nothing else chose (the options'
    `config_kwargs.retries`, AWS_RETRY_MODE or AWS_MAX_ATTEMPTS)."""
    config = dict(options.get("config_kwargs") or {})
    if protocol not in ("s3", "s3a") or "retries" in config or any(os.environ.get(k) for k in AWS_RETRY_ENV):
        return options
    return {**options, "config_kwargs": {**config, "retries": dict(S3_RETRIES)}}


@lru_cache(maxsize=16)
def _filesystem(protocol: str, options: str):
    import fsspec

    return fsspec.filesystem(protocol, **_with_retries(protocol, json.loads(options)))


class StorageError(InputError):
    """A request to object storage that failed for good, after the retries. Its line names the object's URL, the
    store's error code and the attempts made, so a person tells throttling (run again later: it resumes) from
    credentials or a wrong endpoint. Picklable: it crosses process pools and Ray."""

    def __init__(self, url: str, code: str, attempts: int, said: str = ""):
        self.url, self.code, self.attempts, self.said = url, code, attempts, said
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        super().__init__(url, f"object storage answered {code}{f' ({said})' if said else ''} to {tries}",
                         _storage_fix(code))

    def __reduce__(self):
        return (type(self), (self.url, self.code, self.attempts, self.said))


_THROTTLED = ("SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
              "ServiceUnavailable", "InternalError", "HTTP 500", "HTTP 502", "HTTP 503", "HTTP 504")
_DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "HTTP 403")


def _storage_fix(code: str) -> str:
    if code.startswith(_THROTTLED):
        return ("the store is throttling or failing requests: run the same command again later (it resumes from the "
                "finished files), or with fewer workers; --storage-options '{\"config_kwargs\": {\"retries\": "
                "{\"total_max_attempts\": N}}}' or AWS_MAX_ATTEMPTS allow more retries")
    if code.startswith(_DENIED):
        return ("check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or "
                "--storage-options) and the bucket's policy")
    if code == "NoSuchBucket":
        return "create the bucket, or check the URL and the endpoint (AWS_ENDPOINT_URL / --storage-options)"
    return "check the endpoint (AWS_ENDPOINT_URL / --storage-options) and the network, then run the same command again"


_S3FS_RETRIED = ("SlowDown", "reduce your request rate", "XAmzContentSHA256Mismatch")  # s3fs's own retry rule


def storage_error(exc: BaseException, url: str, fs=None) -> StorageError | None:
    """The StorageError `exc` amounts to (an S3 error answer, or a connection botocore gave up on, in its chain),
    or None. Attempts: botocore's (its response metadata counts the retries; a dropped connection is retried up to
    the client's maximum) times s3fs's tries around them (all of `fs.retries` for the errors s3fs retries)."""
    chain, seen = exc, 0
    while chain is not None and seen < 8:
        response = getattr(chain, "response", None)
        if isinstance(response, dict) and isinstance(response.get("Error"), dict):
            meta = response.get("ResponseMetadata") or {}
            status = meta.get("HTTPStatusCode")
            code = response["Error"].get("Code") or f"HTTP {status}"
            said = "; ".join(x for x in (f"HTTP {status}" if status and not code.startswith("HTTP") else "",
                                         response["Error"].get("Message") or "") if x)
            s3fs_tries = getattr(fs, "retries", 1) if any(p in str(chain) for p in _S3FS_RETRIED) else 1
            return StorageError(url, code, (int(meta.get("RetryAttempts") or 0) + 1) * s3fs_tries, said[:200])
        transport = _transport_tries(chain, fs)
        if transport is not None:
            return StorageError(url, type(chain).__name__, transport, str(chain)[:200])
        chain, seen = chain.__cause__ or chain.__context__, seen + 1
    return None


def _transport_tries(exc: BaseException, fs) -> int | None:
    """Attempts behind a connection error botocore gave up on (None for anything else): the client's maximum times
    s3fs's tries. Its HTTP library may also resend a request once on a dropped keep-alive connection, unseen here."""
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:
        return None
    if not isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return None
    client = getattr(fs, "_s3", None)
    retries = getattr(getattr(getattr(client, "meta", None), "config", None), "retries", None) or {}
    s3fs_tries = getattr(fs, "retries", 1) if isinstance(exc, HTTPClientError) else 1  # s3fs retries only these
    return int(retries.get("total_max_attempts") or 1) * s3fs_tries


@contextmanager
def reported(url: str) -> Iterator[None]:
    """Requests for `url` in the block that fail for good raise StorageError naming it (FileNotFoundError, a
    missing object, passes as it is)."""
    try:
        yield
    except (FileNotFoundError, StorageError):
        raise
    except Exception as e:
        found = storage_error(e, url, filesystem(url)[0]) if is_url(url) else None
        if found is None:
            raise
        raise found from e


def filesystem(url: str):
    """(fsspec filesystem, path within it) for a URL, with the configured storage options."""
    from fsspec.core import split_protocol

    protocol, _ = split_protocol(url)
    fs = _filesystem(protocol, json.dumps(storage_options(), sort_keys=True))
    return fs, fs._strip_protocol(url)


def as_path(path: str | os.PathLike) -> "str | Path":
    """A URL as its string (pathlib would fold its `//`), anything else as a Path."""
    return str(path) if is_url(str(path)) else Path(path)


def join(base: str, *names: str) -> str:
    """`base/name/...` for a URL or a local path."""
    if is_url(base):
        return "/".join([base.rstrip("/"), *(n.strip("/") for n in names)])
    return str(Path(base, *names))


def exists(path: str) -> bool:
    if is_url(path):
        fs, p = filesystem(path)
        with reported(path):
            return fs.exists(p)
    return Path(path).exists()


def is_dir(path: str) -> bool:
    if is_url(path):
        fs, p = filesystem(path)
        with reported(path):
            return fs.isdir(p)
    return Path(path).is_dir()


def size(path: str) -> int | None:
    """Bytes of a file (local or remote), None when it is not there."""
    if is_url(path):
        fs, p = filesystem(path)
        try:
            with reported(path):
                return int(fs.size(p))
        except FileNotFoundError:
            return None
    try:
        return Path(path).stat().st_size
    except FileNotFoundError:
        return None


def list_files(folder: str, suffix: str = "") -> list[str]:
    """Files directly in `folder` whose names end with `suffix`, sorted, as URLs or paths like `folder`."""
    if is_url(folder):
        fs, p = filesystem(folder)
        try:
            with reported(folder):
                names = [n.rsplit("/", 1)[-1] for n in fs.ls(p, detail=False, refresh=True)]
        except FileNotFoundError:
            return []
        return sorted(join(folder, n) for n in names if n.endswith(suffix))
    d = Path(folder)
    return sorted(str(p) for p in d.iterdir() if p.is_file() and p.name.endswith(suffix)) if d.is_dir() else []


def open_input(path: str, mode: str = "rb") -> IO:
    """A file object for a local path or a URL; a remote one reads by ranges (seekable), so a reader that needs
    a header or one member reads only that. Its reads fail as StorageError naming the URL, whoever reads it
    (pyarrow, tarfile, PyAV): a store that fails for good mid-file is one line, not a reader's traceback."""
    if is_url(path):
        fs, p = filesystem(path)
        with reported(path):
            return _ReportedReads(fs.open(p, mode), path)
    return open(path, mode)


class _ReportedReads:
    """A remote file whose requests (made by `read`, `readinto`, `readline` and friends) run under `reported`;
    everything else is the file's own."""

    def __init__(self, f, url: str):
        self._f, self._url = f, url

    def __getattr__(self, name: str):
        attr = getattr(self._f, name)
        if name not in ("read", "read1", "readinto", "readinto1", "readline", "readlines", "seek"):
            return attr

        def call(*args, **kwargs):
            with reported(self._url):
                return attr(*args, **kwargs)

        return call

    def __iter__(self):
        return iter(self.readline, b"" if "b" in getattr(self._f, "mode", "rb") else "")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def read_bytes(path: str) -> bytes:
    with reported(path), open_input(path) as f:
        return f.read()


def read_parquet(path: str, columns: list[str] | None = None):
    """A Parquet file (path or URL) as an Arrow table."""
    import pyarrow.parquet as pq

    with open_input(str(path)) as f:
        return pq.read_table(f, columns=columns)


def read_parquet_schema(path: str):
    import pyarrow.parquet as pq

    with open_input(str(path)) as f:
        return pq.read_schema(f)


def sha256_of(path: str, chunk: int = 8 << 20) -> str:
    """Hex sha256 of a local or remote file, streamed."""
    h = hashlib.sha256()
    with reported(path), open_input(path) as f:
        while data := f.read(chunk):
            h.update(data)
    return h.hexdigest()


@contextmanager
def input_file(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A local path to read: the path itself, or a URL's object fetched into a temp file removed afterwards (for
    readers that want a whole local file)."""
    if not is_url(path):
        yield Path(path)
        return
    fd, tmp = tempfile.mkstemp(prefix=".yume-input-", suffix=suffix or Path(str(path)).suffix)
    os.close(fd)
    try:
        fs, p = filesystem(str(path))
        with reported(str(path)):
            fs.get_file(p, tmp)
        yield Path(tmp)
    finally:
        os.unlink(tmp)


# ------------------------------------------------------------------------------------------------ mirrored outputs


def staging_root() -> Path:
    """Where staging folders live: `$YUME_DATA_STAGING`, else `<cache>/staging` (node-local scratch on a cluster)."""
    if os.environ.get(STAGING_ENV):
        return Path(os.environ[STAGING_ENV])
    from yume_core.storage import cache_root

    return cache_root() / "staging"


def staging_dir(url: str) -> Path:
    """The local folder that mirrors `url`: the same on every node and every run, so that paths recorded in
    manifests and handed to tasks name the same files everywhere."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", url.split("://", 1)[1]).strip("_")[-80:]
    return staging_root() / f"{readable}-{hashlib.sha256(url.rstrip('/').encode()).hexdigest()[:10]}"


class Mirror:
    """A local staging folder and the URL it mirrors."""

    def __init__(self, root: Path, url: str):
        self.root, self.url = Path(root), url.rstrip("/")

    def remote_of(self, path: str | Path) -> str:
        rel = Path(os.path.abspath(path)).relative_to(self.root)
        return join(self.url, rel.as_posix())

    def push(self, path: str | Path) -> None:
        url = self.remote_of(path)
        fs, p = filesystem(url)
        with reported(url):
            fs.put_file(str(path), p)

    def remove(self, path: str | Path) -> None:
        url = self.remote_of(path)
        fs, p = filesystem(url)
        try:
            with reported(url):
                fs.rm_file(p)
        except FileNotFoundError:
            pass

    def remote_size(self, path: str | Path) -> int | None:
        return size(self.remote_of(path))

    def pull(self, path: str | Path) -> bool:
        """Fetch one file from the URL into the staging folder (atomically); False when the URL has none."""
        from yume_core.storage import TMP_MARK

        path = Path(path)
        url = self.remote_of(path)
        fs, p = filesystem(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{TMP_MARK}pull-{os.getpid()}-{threading.get_ident()}-{path.name}")
        try:
            with reported(url):
                fs.get_file(p, str(tmp))
        except FileNotFoundError:
            return False
        os.replace(tmp, path)
        return True

    def remote_files(self, under: str = "") -> dict[str, int]:
        """Relative path -> size of every object under the URL (or under its folder `under`)."""
        url = join(self.url, under) if under else self.url
        fs, base = filesystem(url)
        try:
            with reported(url):
                found = fs.find(base, detail=True, withdirs=False)
        except FileNotFoundError:
            return {}
        base = base.rstrip("/") + "/"
        prefix = under.strip("/") + "/" if under else ""
        return {prefix + k[len(base):]: int(v.get("size") or 0) for k, v in found.items() if k.startswith(base)}

    def pull_state(self) -> int:
        """Fetch every remote file but the payloads (tars, videos) that the staging folder lacks or holds at
        another size; returns how many. What a run needs to resume: parts, index parts, markers, manifests."""
        from yume_core.storage import TMP_MARK

        n = 0
        for rel, nbytes in self.remote_files().items():
            local = self.root / rel
            if rel.endswith(PAYLOAD_SUFFIXES) or Path(rel).name.startswith(TMP_MARK) or rel == MIRROR_FILE:
                continue
            if not local.is_file() or local.stat().st_size != nbytes:
                n += self.pull(local)
        return n

    def sync(self, under: str = "") -> int:
        """Upload every staging file (below the folder `under`) the URL lacks or holds at another size: what was not
        written through `atomic_path` (which uploads as it renames), or what a killed run wrote but did not upload.
        Returns how many were uploaded."""
        from yume_core.storage import TMP_MARK

        remote = self.remote_files(under)
        n = 0
        for path in sorted((self.root / under).rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if not path.is_file() or path.name.startswith(TMP_MARK) or rel == MIRROR_FILE:
                continue
            if remote.get(rel) == path.stat().st_size:
                continue
            self.push(path)
            n += 1
        return n


_mirrors: dict[str, Mirror | None] = {}
_mirrors_lock = threading.Lock()


@lru_cache(maxsize=4)
def _opened(text: str) -> tuple[tuple[Path, str], ...]:
    return tuple((Path(root), url) for root, url in json.loads(text).items()) if text else ()


def mirror_for(path: str | Path) -> Mirror | None:
    """The mirror a local path lies in: an output this run opened (`YUME_DATA_MIRRORS`, which workers on other
    nodes inherit, where the staging folder starts empty), else its nearest folder with a `.yume-remote.json`."""
    folder = Path(os.path.abspath(path)).parent
    for root, url in _opened(os.environ.get(MIRRORS_ENV, "")):
        if folder == root or root in folder.parents:
            return Mirror(root, url)
    key = str(folder)
    with _mirrors_lock:
        if key in _mirrors:  # `open_output` clears this when it makes a folder a mirror
            return _mirrors[key]
    found = None
    for d in (folder, *folder.parents):
        marker = d / MIRROR_FILE
        if marker.is_file():
            found = Mirror(d, json.loads(marker.read_text())["url"])
            break
    with _mirrors_lock:
        _mirrors[key] = found
    return found


def push_if_mirrored(path: str | Path) -> None:
    """Upload a file just finished in a staging folder (called by `atomic_path` after its rename)."""
    if (mirror := mirror_for(path)) is not None:
        mirror.push(path)


def ensure_local(path: str | Path) -> Path:
    """`path`, fetched from its mirror's URL first when it is not here (a file another node wrote)."""
    path = Path(path)
    if not path.exists() and (mirror := mirror_for(path)) is not None:
        mirror.pull(path)
    return path


def open_staged(path: str | Path) -> IO:
    """Open a staged file for reading: the local copy, else (written on another node, or dropped after its upload)
    its object in the mirrored bucket, read by ranges."""
    path = Path(path)
    if not path.exists() and (mirror := mirror_for(path)) is not None:
        return open_input(mirror.remote_of(path))
    return open(path, "rb")


def staged_size(path: str | Path) -> int:
    """Bytes of a staged file, here or (dropped after its upload) in the mirrored bucket."""
    path = Path(path)
    if not path.exists() and (mirror := mirror_for(path)) is not None and (n := mirror.remote_size(path)) is not None:
        return n
    return path.stat().st_size


def drop_uploaded(path: str | Path) -> bool:
    """Delete the local copy of a payload once it is in the bucket (staging keeps only the small state, so a node
    needs scratch space for the shards it is writing, not for all it wrote); False where the folder mirrors nothing."""
    if mirror_for(path) is None:
        return False
    Path(path).unlink(missing_ok=True)
    return True


def ensure_local_tree(path: str | Path) -> Path:
    """`ensure_local` for a file or a whole folder (payloads included): inputs a build generated into its own
    output, needed whole by the steps that read them."""
    path = Path(path)
    mirror = mirror_for(path / MIRROR_FILE)
    if mirror is None or path.is_file() or (not path.exists() and mirror.pull(path)):
        return path
    rel = Path(os.path.abspath(path)).relative_to(mirror.root).as_posix()
    for name, nbytes in mirror.remote_files(rel).items():
        local = mirror.root / name
        if not local.is_file() or local.stat().st_size != nbytes:
            mirror.pull(local)
    return path


def open_output(output: str | os.PathLike) -> str:
    """Where a flow writes: a local path as given, or for a URL its staging folder, made a mirror of the URL and
    filled with the state of earlier runs (so the run resumes). Idempotent: opening it again is cheap."""
    output = str(output)
    if not is_url(output):
        return output
    fs, p = filesystem(output)
    if "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)) and not exists(
            output.split("://", 1)[0] + "://" + p.split("/")[0]):
        raise InputError(output, f"bucket {p.split('/')[0]!r} does not exist",
                         "create it, or check the endpoint in AWS_ENDPOINT_URL / --storage-options")
    root = staging_dir(output)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / MIRROR_FILE
    if not marker.is_file():  # written by hand, not `atomic_path`: the marker itself is not uploaded
        tmp = root / f".tmp-{os.getpid()}-{MIRROR_FILE}"
        tmp.write_text(json.dumps({"url": output.rstrip("/")}))
        os.replace(tmp, marker)
    with _mirrors_lock:
        _mirrors.clear()
    opened = json.loads(os.environ.get(MIRRORS_ENV) or "{}")
    opened[str(root)] = output.rstrip("/")
    os.environ[MIRRORS_ENV] = json.dumps(opened, sort_keys=True)
    Mirror(root, output).pull_state()
    return str(root)


def open_flow_output_file(path: str | os.PathLike) -> str:
    """A file another flow wrote (its `manifest.parquet`), as a local path: for a URL, the file in the staging
    folder of its output folder, which is opened as that flow's output is (its small state fetched), so paths in the
    manifest relative to it resolve there, and its videos are fetched when read (`ensure_local`)."""
    path = str(path)
    if not is_url(path):
        return path
    folder, name = path.rstrip("/").rsplit("/", 1)
    local = Path(open_output(folder)) / name
    if not ensure_local(local).is_file():
        raise FileNotFoundError(f"{path}: no such object (or the storage settings cannot reach it)")
    return str(local)


def public_path(path: str | os.PathLike) -> str:
    """Where a file of a staging folder really is (its URL), for what a person is shown; other paths as given."""
    if is_url(str(path)):
        return str(path)
    mirror = mirror_for(Path(path) / MIRROR_FILE if Path(path).is_dir() else path)
    return mirror.remote_of(path) if mirror is not None else str(path)


def finish_output(local: str | os.PathLike) -> str | None:
    """Upload what the run left in its output folder (a staging folder, or a folder inside one: a build's stage)
    that is not in the URL yet, listing only that folder here and in the bucket; returns the folder's URL (None for
    a local output)."""
    mirror = mirror_for(Path(local) / MIRROR_FILE)
    if mirror is None:
        return None
    under = Path(os.path.abspath(local)).relative_to(mirror.root).as_posix()
    mirror.sync("" if under == "." else under)
    return mirror.remote_of(local) if under != "." else mirror.url


