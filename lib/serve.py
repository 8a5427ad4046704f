"""Serve the web page (web/) with a run's TF.js model on the local machine.

    python -m lib serve outputs/demo          # http://127.0.0.1:8000/

URL layout, all from one origin so the page's Content-Security-Policy ('self' only) holds:
    /                 web/index.html, app.js, style.css
    /node_modules/... web/node_modules (the project's own copy of TF.js; `npm ci` in web/)
    /model/...        <run_dir>/tfjs: model.json, *.bin, metadata.json
The server is a plain `http.server`: for a local demo and the tests, not for the internet.
"""

import functools
import http.server
import logging
import mimetypes
import posixpath
import threading
import urllib.parse
from pathlib import Path

from lib import artifacts, paths
from lib.errors import ExportError

logger = logging.getLogger(__name__)

WEB_DIR = paths.PROJECT_ROOT / "web"
# .wasm must be served as application/wasm or TF.js' wasm backend falls back to a slower load path
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".mjs")


class MountedHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from several folders, each mounted at a URL prefix (longest prefix wins)."""

    def __init__(self, *args, mounts, **kwargs):
        self.mounts = sorted(mounts.items(), key=lambda item: -len(item[0]))
        super().__init__(*args, directory=str(WEB_DIR), **kwargs)

    def translate_path(self, path):
        url_path = posixpath.normpath(urllib.parse.unquote(urllib.parse.urlsplit(path).path))
        if path.split("?")[0].endswith("/") and not url_path.endswith("/"):
            url_path += "/"
        for prefix, folder in self.mounts:
            if url_path == prefix.rstrip("/") or url_path.startswith(prefix):
                relative = url_path[len(prefix):] if url_path.startswith(prefix) else ""
                parts = [part for part in relative.split("/") if part not in ("", ".", "..")]
                return str(Path(folder).joinpath(*parts))
        return str(WEB_DIR / "__not_found__")

    def end_headers(self):
        # a demo page under development: never serve a stale model or script from the cache
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):
        logger.debug("%s %s", self.address_string(), format % args)


def make_server(mounts, host="127.0.0.1", port=0):
    """Return a ThreadingHTTPServer (not yet serving) for `mounts`: {"/url/prefix/": folder}.

    port 0 picks a free port; read it from `server.server_address[1]`."""
    for prefix, folder in mounts.items():
        if not (prefix.startswith("/") and prefix.endswith("/")):
            raise ValueError(f"mount prefix {prefix!r} must start and end with '/'")
        if not Path(folder).is_dir():
            raise ValueError(f"mounted folder {folder} for {prefix!r} does not exist")
    handler = functools.partial(MountedHandler, mounts={k: Path(v) for k, v in mounts.items()})
    return http.server.ThreadingHTTPServer((host, port), handler)


def run_mounts(run_dir, web_dir=WEB_DIR):
    """The mounts serving the page from `web_dir` with `run_dir`/tfjs at /model/; checks both exist."""
    run_dir = Path(run_dir)
    tfjs_dir = run_dir / "tfjs"
    if not (tfjs_dir / "model.json").is_file():
        raise ExportError(f"no TF.js model in {tfjs_dir}: run notebook 05_convert_tfjs first "
                          f"(python -m lib notebook {run_dir} 05_convert_tfjs)")
    stale = artifacts.stale_reason(run_dir, "05_convert_tfjs")
    if stale:
        raise ExportError(f"the TF.js model in {tfjs_dir} is stale ({stale}): it was converted from an earlier "
                          f"model; convert the current one first (python -m lib notebook {run_dir} 04_evaluate, "
                          f"then 05_convert_tfjs)")
    if not (Path(web_dir) / "node_modules" / "@tensorflow" / "tfjs").is_dir():
        raise ExportError(f"TF.js is not installed in {web_dir}/node_modules: run `npm ci` in {web_dir}")
    return {"/": Path(web_dir), "/model/": tfjs_dir}


def start_in_thread(server):
    """Serve `server` from a daemon thread; returns the base URL. Stop with `server.shutdown()`."""
    threading.Thread(target=server.serve_forever, name="lib.serve", daemon=True).start()
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"


def serve(run_dir, host="127.0.0.1", port=8000):
    """Serve the page with `run_dir`'s TF.js model until Ctrl-C; prints the URL to open."""
    server = make_server(run_mounts(paths.resolve(run_dir)), host=host, port=port)
    host, port = server.server_address[:2]
    print(f"Serving {run_dir} at http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
