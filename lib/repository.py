"""Where the project's repository is: `paths.REPOSITORY_URL` (and `paths.REPOSITORY_BRANCH`) name it, and two kinds
of copy repeat it because they cannot import it: the README's "Open in Colab" badges, and the `colab_repository`
default in the parameters cell of every notebook that runs on Colab (a fresh Colab machine reads it to clone the
project). `python -m lib repository URL` rewrites all of them; `disagreements` lists any copy that differs.
"""

import json
import re
from pathlib import Path

from lib import paths

GITHUB_URL = re.compile(r"https://github\.com/(?P<owner>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+?)(?:\.git)?/?")
BADGE_LINK = re.compile(r"https://colab\.research\.google\.com/github/(?P<repository>[^/\s)]+/[^/\s)]+)"
                        r"/blob/(?P<branch>[^/\s)]+)/(?P<notebook>[^\s)]+?\.ipynb)")
DEFAULT_IN_NOTEBOOK = re.compile(r'(colab_repository = \\")([^"\\]*)(\\")')  # as the line reads inside .ipynb JSON
URL_IN_PATHS = re.compile(r'^(REPOSITORY_URL = ")([^"]*)(")', re.M)
BRANCH_IN_PATHS = re.compile(r'^(REPOSITORY_BRANCH = ")([^"]*)(")', re.M)


def github_repository(url):
    """"OWNER/NAME" of a GitHub repository URL. Raises ValueError for anything else: Colab opens notebooks from
    GitHub only."""
    match = GITHUB_URL.fullmatch(url.strip())
    if not match:
        raise ValueError(f"{url!r} is not a GitHub repository URL: Colab opens notebooks from GitHub only; give "
                         f"https://github.com/OWNER/NAME")
    return f"{match['owner']}/{match['name']}"


def badge_url(notebook, url=None, branch=None):
    """The Colab link that opens `notebook` (a path relative to the project root) from the repository."""
    repository = github_repository(url or paths.REPOSITORY_URL)
    return f"https://colab.research.google.com/github/{repository}/blob/{branch or paths.REPOSITORY_BRANCH}/{notebook}"


def colab_notebooks(project_root=paths.PROJECT_ROOT):
    """The notebooks that run on Colab, relative to the project root: the one-click colab.ipynb and the steps."""
    root = Path(project_root)
    return [path.relative_to(root).as_posix() for path in [root / "colab.ipynb", *sorted(root.glob("notebooks/*.ipynb"))]
            if path.is_file()]


def notebook_default(notebook_path):
    """The `colab_repository = "..."` default in the notebook's parameters cell, or None."""
    cells = json.loads(Path(notebook_path).read_text(encoding="utf-8"))["cells"]
    for cell in cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            match = re.search(r'^colab_repository = "([^"]*)"', "".join(cell["source"]), re.M)
            return match and match.group(1)
    return None


def disagreements(project_root=paths.PROJECT_ROOT, url=None, branch=None):
    """Every copy of the repository's URL that differs from `url`/`branch` (default: paths'), as sentences: a README
    badge for another repository, branch or a missing notebook, a Colab notebook without a badge, a notebook whose
    `colab_repository` default differs. Empty when all agree."""
    root, url, branch = Path(project_root), url or paths.REPOSITORY_URL, branch or paths.REPOSITORY_BRANCH
    repository, problems = github_repository(url), []
    readme = (root / "README.md").read_text(encoding="utf-8")
    badged = set()
    for match in BADGE_LINK.finditer(readme):
        badged.add(match["notebook"])
        if (match["repository"], match["branch"]) != (repository, branch):
            problems.append(f"README.md: the badge of {match['notebook']} opens {match['repository']} "
                            f"(branch {match['branch']}), not {repository} (branch {branch})")
        if not (root / match["notebook"]).is_file():
            problems.append(f"README.md: the badge of {match['notebook']} opens a notebook the project does not have")
    for notebook in colab_notebooks(root):
        if notebook not in badged:
            problems.append(f"README.md has no Colab badge for {notebook}")
        default = notebook_default(root / notebook)
        if default != url:
            problems.append(f"{notebook}: colab_repository = {default!r}, not {url!r}")
    return problems


def set_repository(url, branch=None, project_root=paths.PROJECT_ROOT):
    """Make `url` (https://github.com/OWNER/NAME) the project's repository: lib/paths.py, the README badges and the
    notebooks' `colab_repository` defaults. Returns the files changed."""
    root, url = Path(project_root), url.strip().rstrip("/").removesuffix(".git")
    github_repository(url)
    branch = branch or paths.REPOSITORY_BRANCH
    rewrites = {"lib/paths.py": lambda text: BRANCH_IN_PATHS.sub(rf"\g<1>{branch}\g<3>",
                                                                 URL_IN_PATHS.sub(rf"\g<1>{url}\g<3>", text)),
                "README.md": lambda text: BADGE_LINK.sub(lambda m: badge_url(m["notebook"], url, branch), text)}
    for notebook in colab_notebooks(root):
        rewrites[notebook] = lambda text: DEFAULT_IN_NOTEBOOK.sub(lambda m: f"{m[1]}{url}{m[3]}", text)
    changed = []
    for relative, rewrite in rewrites.items():
        path = root / relative
        text = path.read_text(encoding="utf-8")
        if rewrite(text) != text:
            path.write_text(rewrite(text), encoding="utf-8")
            changed.append(relative)
    return changed
