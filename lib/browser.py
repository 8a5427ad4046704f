"""Drive headless Chromium (Debian's /usr/bin/chromium via npm's playwright-core) from Python.

The browser work itself is in Node scripts under web/scripts/ (playwright-core is a Node library);
this module finds node and chromium, says what is missing and how to install it, and runs a script
under a timeout (a wrong TF.js graph can spin at 100% CPU instead of failing), returning its JSON.
"""

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

from lib import paths
from lib.errors import ExportError

logger = logging.getLogger(__name__)

WEB_DIR = paths.PROJECT_ROOT / "web"
SCRIPTS_DIR = WEB_DIR / "scripts"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install with `apt-get install -y chromium` and `npm ci` in web/"


def find_chromium():
    """Path of a Chromium executable: $CHROMIUM_PATH, else the first of CHROMIUM_CANDIDATES on PATH; or None."""
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return configured if Path(configured).is_file() else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_tools(web_dir=WEB_DIR):
    """The list of what is missing to run the browser checks (empty when everything is there)."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Node.js 18+)")
    if find_chromium() is None:
        missing.append("chromium")
    for package in ("playwright-core", "@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm"):
        if not (Path(web_dir) / "node_modules" / package).is_dir():
            missing.append(f"{package} in {web_dir}/node_modules")
    return missing


def run_script(script, arguments, timeout_seconds=120):
    """Run web/scripts/`script` with node and `arguments` (a JSON-able dict, passed as argv[2]).

    The script prints one JSON object on its last stdout line; that object is returned as a dict.
    Raises ExportError if tools are missing, the script fails, or it exceeds `timeout_seconds`."""
    missing = missing_tools()
    if missing:
        raise ExportError(f"cannot run the browser check, missing: {', '.join(missing)}; {INSTALL_HINT}")
    command = ["node", str(SCRIPTS_DIR / script), json.dumps({**arguments, "chromium": find_chromium()})]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_seconds, cwd=WEB_DIR)
    except subprocess.TimeoutExpired as error:
        raise ExportError(f"{script} did not finish within {timeout_seconds} s (a TF.js graph that spins, or a "
                          f"page that never answered); stderr: {(error.stderr or b'')[-2000:]!r}") from error
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ExportError(f"{script} failed (exit {result.returncode}): {result.stderr[-3000:]}"
                          f"{result.stdout[-1000:]}")
    return json.loads(lines[-1])
