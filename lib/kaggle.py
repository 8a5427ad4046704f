"""Kaggle datasets: where the credentials are (never what they are), checking a credentials file,
downloading a dataset through the `kaggle` package, extracting its zip safely (no member may land
outside the target folder) and atomically (a temp folder, renamed only once verified), and reusing a
verified copy. Error messages say what to do and never contain a secret.
"""

import json
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from lib.errors import DataSourceError

log = logging.getLogger(__name__)

SECRET_VARIABLES = ("KAGGLE_API_TOKEN", "KAGGLE_KEY")
VERIFIED_MARKER = ".verified.json"
NEW_TOKEN = "create a new token at https://www.kaggle.com/settings ('API' > 'Create New Token')"
NO_CREDENTIALS = ("Kaggle credentials not found: set KAGGLE_API_TOKEN (from https://www.kaggle.com/settings, "
                  "'API' > 'Generate New Token'), or KAGGLE_USERNAME and KAGGLE_KEY, or save kaggle.json to "
                  "~/.kaggle/ (or $KAGGLE_CONFIG_DIR), or add them as Colab secrets; or set data.source: local "
                  "with data.path pointing at a downloaded copy")
_MIN_SECRET_LENGTH = 8  # shorter values would redact ordinary words; real keys are 32+ characters


def find_credentials(environ=None, home=None):
    """Where Kaggle credentials are, in the order the project honours, or None: "KAGGLE_API_TOKEN",
    "KAGGLE_USERNAME/KAGGLE_KEY", the path of kaggle.json ($KAGGLE_CONFIG_DIR or ~/.kaggle), the path
    of ~/.kaggle/access_token, or "colab secrets" (copied into this process's environment only).
    Returns a description of the place, never the secret itself."""
    environ = os.environ if environ is None else environ
    home = Path(home or Path.home())
    if environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if environ.get("KAGGLE_USERNAME") and environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    for candidate in _credential_files(environ, home):
        if candidate.is_file():
            return str(candidate)
    return _colab_credentials(environ)


def _credential_files(environ, home):
    config_dir = Path(environ["KAGGLE_CONFIG_DIR"]) if environ.get("KAGGLE_CONFIG_DIR") else home / ".kaggle"
    return config_dir / "kaggle.json", home / ".kaggle" / "access_token"


def _colab_credentials(environ):
    try:
        from google.colab import userdata  # only importable inside Colab
    except ImportError:
        return None
    for names in (("KAGGLE_API_TOKEN",), ("KAGGLE_USERNAME", "KAGGLE_KEY")):
        try:
            values = [userdata.get(name) for name in names]
        except Exception as error:  # Colab raises SecretNotFoundError / NotebookAccessError
            log.info("Colab secret %s not available (%s)", names[0], type(error).__name__)
            continue
        if all(values):
            environ.update(dict(zip(names, values)))  # in memory only: never written to disk
            return "colab secrets"
    return None


def check_credentials_file(path):
    """Check a kaggle.json or access_token file before the kaggle package reads it (it silently
    ignores a malformed one and then reports no credentials at all). Warns, as the kaggle tool does,
    when other users can read it; raises DataSourceError naming the file when it is unusable.
    The message never quotes the file's content."""
    path = Path(path)
    mode = path.stat().st_mode
    if os.name != "nt" and mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("your Kaggle credentials file %s is readable by other users on this system; "
                    "to fix this, run: chmod 600 %s", path, path)
    text = path.read_text(errors="replace").strip()
    if path.suffix != ".json":
        if not text:
            raise DataSourceError(f"Kaggle access token file {path} is empty: {NEW_TOKEN} and save it there, "
                                  f"or delete the file and set KAGGLE_API_TOKEN")
        return
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:  # its message gives the position only, never the text
        problem = f"it is not valid JSON (line {error.lineno}, column {error.colno})"
    else:
        missing = [name for name in ("username", "key")
                   if not isinstance(content, dict) or not isinstance(content.get(name), str) or not content[name]]
        if not missing:
            return
        problem = f"it lacks {' and '.join(repr(name) for name in missing)}"
    raise DataSourceError(f"Kaggle credentials file {path} is malformed: {problem}. It must be the kaggle.json "
                          f"that Kaggle gives you, {{\"username\": \"...\", \"key\": \"...\"}}: {NEW_TOKEN}, save "
                          f"the downloaded kaggle.json as {path} (chmod 600), or delete it and set KAGGLE_API_TOKEN")


def secret_values(environ=None, home=None):
    """The secret strings this process could hold (environment keys, kaggle.json key, access token),
    for redaction; values too short to be real keys are left out."""
    environ = os.environ if environ is None else environ
    values = [environ.get(name, "") for name in SECRET_VARIABLES]
    for candidate in _credential_files(environ, Path(home or Path.home())):
        try:
            text = candidate.read_text(errors="replace").strip()
            values.append(json.loads(text).get("key", "") if candidate.suffix == ".json" else text)
        except (OSError, ValueError, AttributeError):
            continue  # absent or malformed: nothing to redact from it
    return sorted({value for value in values if isinstance(value, str) and len(value) >= _MIN_SECRET_LENGTH},
                  key=len, reverse=True)


def redact(text, secrets):
    """`text` with every secret of `secrets` replaced by "***"."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def download_dataset(slug, raw_root, verify):
    """Download Kaggle dataset `slug` ("owner/name") into `raw_root`/<owner>__<name>/ and return that
    folder. `verify(folder)` checks an extracted copy (returns its image counts, raises DataSourceError).
    A copy marked verified is reused only when it verifies again with the counts recorded at download;
    anything else found there (an interrupted attempt, a damaged copy) is removed and downloaded again.
    Extraction happens in a temp folder, renamed only after verification, so no half-written dataset is
    ever at the target path."""
    target = Path(raw_root) / slug.replace("/", "__")
    if (target / VERIFIED_MARKER).exists():
        try:
            counts = verify(target)
            recorded = json.loads((target / VERIFIED_MARKER).read_text()).get("counts")
            if counts != recorded:  # files deleted or added since the download was verified
                raise DataSourceError(f"it now holds {counts} images, {recorded} when downloaded")
            log.info("reusing verified download %s", target)
            return target
        except DataSourceError as error:
            log.warning("cached copy %s failed verification (%s); downloading again", target, error)
            shutil.rmtree(target)
    elif target.exists():
        log.warning("removing unverified download %s (an interrupted earlier attempt)", target)
        shutil.rmtree(target)
    where = find_credentials()
    if where is None:
        raise DataSourceError(NO_CREDENTIALS)
    if where not in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME/KAGGLE_KEY", "colab secrets"):
        check_credentials_file(where)
    log.info("downloading %s from Kaggle (credentials from %s)", slug, where)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        _download(slug, staging / "download", where)
        archives = sorted((staging / "download").glob("*.zip"))
        if not archives:
            raise DataSourceError(f"Kaggle download of {slug} produced no zip file in {staging / 'download'}")
        for archive in archives:
            extract_zip_safely(archive, staging / "extracted")
        counts = verify(staging / "extracted")
        (staging / "extracted" / VERIFIED_MARKER).write_text(json.dumps({"slug": slug, "counts": counts}))
        publish_folder(staging / "extracted", target, VERIFIED_MARKER)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _download(slug, folder, where):
    folder.mkdir(parents=True)
    try:  # authentication may already go online (token introspection): explain its failures too
        # quiet=False: the kaggle package shows a progress bar (file names and sizes, never credentials)
        _kaggle_api().dataset_download_files(slug, path=str(folder), quiet=False, unzip=False)
    except DataSourceError:
        raise
    except Exception as error:
        # `from None`: the original exception's text (a URL, a response body) may hold a secret
        raise explain_error(error, slug, where) from None


def _kaggle_api():
    """An authenticated kaggle KaggleApi; the import is lazy because `import kaggle` authenticates."""
    from kaggle.api.kaggle_api_extended import KaggleApi
    api = KaggleApi()
    try:
        api.authenticate()
    except SystemExit:  # the kaggle package exits the process when it finds no credentials
        raise DataSourceError(NO_CREDENTIALS) from None
    return api


def explain_error(error, slug, where="your credentials"):
    """A DataSourceError saying what to do about a failed Kaggle call (401, 403, 404, offline, other);
    any secret in the original error's text is redacted."""
    status = getattr(getattr(error, "response", None), "status_code", None) or getattr(error, "status", None)
    if status == 401:
        return DataSourceError(f"Kaggle refused the credentials (401) from {where} for {slug}: they are wrong, "
                               f"expired or revoked; {NEW_TOKEN} and set KAGGLE_API_TOKEN to it (or replace "
                               "~/.kaggle/kaggle.json), then run again")
    if status == 403:
        return DataSourceError(f"Kaggle denied access to {slug} (403): sign in and accept the dataset rules at "
                               f"https://www.kaggle.com/datasets/{slug}, with the account of the credentials from "
                               f"{where}, then run again")
    if status == 404:
        return DataSourceError(f"Kaggle dataset {slug} not found (404): check data.dataset (owner/name)")
    detail = redact(f"{type(error).__name__}: {error}", secret_values())
    if status is not None:  # requests' HTTPError is an OSError too: an answer, not a lost connection
        return DataSourceError(f"Kaggle answered HTTP {status} to the download of {slug} ({detail}); try again "
                               "later, or set data.source: local with data.path pointing at a copy")
    if isinstance(error, (ConnectionError, OSError)) or "ConnectionError" in type(error).__name__:
        return DataSourceError(f"cannot reach Kaggle to download {slug} ({type(error).__name__}): check the "
                               "internet connection, or set data.source: local with data.path pointing at a copy")
    return DataSourceError(f"Kaggle download of {slug} failed: {detail}")


def extract_zip_safely(archive, target):
    """Extract `archive` into `target`, refusing (DataSourceError, nothing written) any member whose
    path is absolute, contains '..', or is a symbolic link, and an archive larger than the free disk."""
    target = Path(target).resolve()
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        for member in members:
            name = member.filename.replace("\\", "/")
            is_link = stat.S_ISLNK(member.external_attr >> 16)
            if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in name.split("/") or is_link:
                raise DataSourceError(f"refusing to extract {archive}: unsafe member path {member.filename!r}")
        existing = next(folder for folder in (target, *target.parents) if folder.exists())
        needed, free = sum(member.file_size for member in members), shutil.disk_usage(existing).free
        if needed > free:
            raise DataSourceError(f"refusing to extract {archive}: it needs {needed / 1e9:.1f} GB and {existing} has "
                                  f"{free / 1e9:.1f} GB free; free some space or set data.cache_dir elsewhere")
        for member in members:
            destination = (target / member.filename.replace("\\", "/")).resolve()
            if target not in destination.parents and destination != target:
                raise DataSourceError(f"refusing to extract {archive}: {member.filename!r} escapes {target}")
            if member.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(member) as source, open(destination, "wb") as sink:
                shutil.copyfileobj(source, sink)


def publish_folder(staging, target, marker):
    """Rename the finished `staging` folder to `target` (atomic: no half-written folder is ever at
    `target`). A concurrent writer may have won the race with an equally finished copy, recognised by
    its `marker` file (written last, before publishing): that copy is kept. Any other failure raises.
    Shared by the Kaggle download and the generated source (lib.sources)."""
    try:
        os.rename(staging, target)
    except OSError:
        if not (Path(target) / marker).exists():
            raise
