"""A stand-in for Colab's `google.colab`, for running the project's Colab code paths off Colab (`bash .ci/colab`).

Put this folder's parent (tests/fake_colab) on PYTHONPATH and import `google.colab` at kernel start, as Colab's own
kernel does; `google` stays a namespace package, so protobuf's `google.protobuf` still imports. What it does:
- `files.download(path)` copies the file into $FAKE_COLAB_DOWNLOADS (which must be set): the browser's download.
- `drive.mount(mount_point)` refuses: Colab's mount point (/content/drive) is not this machine's to create; the Drive
  code is tested in tests/test_colab.py with the mount point moved to a temporary folder.
- `userdata.get(name)` raises SecretNotFoundError, as Colab does for a secret the user has not added.
- `output` is there because jax imports it whenever google.colab is (jax/_src/debugger/colab_lib.py); its functions
  drive the browser's page and raise here.
"""

import os
import shutil
import types
from pathlib import Path


class SecretNotFoundError(Exception):
    pass


def _download(path):
    folder = os.environ.get("FAKE_COLAB_DOWNLOADS")
    if not folder:
        raise RuntimeError("fake google.colab: set FAKE_COLAB_DOWNLOADS to the folder that receives downloads")
    Path(folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(path, Path(folder) / Path(path).name)


def _mount(mount_point, *args, **kwargs):
    raise RuntimeError(f"fake google.colab cannot mount Google Drive at {mount_point}: keep_on_drive/colab_mount_drive "
                       "must be False here (tests/test_colab.py covers the Drive code)")


def _secret(name):
    raise SecretNotFoundError(f"Secret {name} does not exist.")


def _browser_only(name):
    def call(*args, **kwargs):
        raise RuntimeError(f"fake google.colab: output.{name} needs Colab's browser page")
    return call


files = types.SimpleNamespace(download=_download)
output = types.SimpleNamespace(**{name: _browser_only(name) for name in (
    "clear", "eval_js", "redirect_to_element", "register_callback", "serve_kernel_port_as_iframe", "use_tags")})
drive = types.SimpleNamespace(mount=_mount)
userdata = types.SimpleNamespace(get=_secret, SecretNotFoundError=SecretNotFoundError)
