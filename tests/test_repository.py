"""The project names its repository once (lib/paths.py); the README's Colab badges and the notebooks'
`colab_repository` defaults repeat it and must agree; `python -m lib repository URL` changes them all."""

import json
import shutil
import subprocess
import sys

import pytest

from lib import paths, repository


def project_copy(tmp_path):
    """The files that name the repository, copied into a temporary project."""
    root = tmp_path / "project"
    for relative in ["README.md", "colab.ipynb", "lib/paths.py", *repository.colab_notebooks()]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(paths.PROJECT_ROOT / relative, root / relative)
    return root


def test_badges_and_notebook_defaults_name_the_projects_one_repository():
    assert repository.disagreements() == []
    assert "colab.ipynb" in repository.colab_notebooks() and len(repository.colab_notebooks()) == 6


def test_a_badge_or_a_default_naming_another_repository_is_reported(tmp_path):
    root = project_copy(tmp_path)
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace(
        f"{repository.github_repository(paths.REPOSITORY_URL)}/blob/main/notebooks/03_train.ipynb",
        "someone/else/blob/main/notebooks/03_train.ipynb"))
    notebook = root / "notebooks" / "04_evaluate.ipynb"
    notebook.write_text(notebook.read_text().replace(paths.REPOSITORY_URL, "https://github.com/someone/else"))
    problems = repository.disagreements(root)
    assert len(problems) == 2
    assert "badge of notebooks/03_train.ipynb opens someone/else" in problems[0]
    assert problems[1] == f"notebooks/04_evaluate.ipynb: colab_repository = 'https://github.com/someone/else', " \
                          f"not {paths.REPOSITORY_URL!r}"


def test_a_notebook_without_a_badge_is_reported(tmp_path):
    root = project_copy(tmp_path)
    readme = root / "README.md"
    readme.write_text("\n".join(line for line in readme.read_text().splitlines() if "blob/main/colab.ipynb" not in line))
    assert repository.disagreements(root) == ["README.md has no Colab badge for colab.ipynb"]


def test_set_repository_rewrites_paths_badges_and_defaults_and_nothing_else(tmp_path):
    root = project_copy(tmp_path)
    before = {path: path.read_text() for path in root.rglob("*") if path.is_file()}
    changed = repository.set_repository("https://github.com/a-fork/skin.git", branch="dev", project_root=root)
    assert sorted(changed) == sorted(["lib/paths.py", "README.md", *repository.colab_notebooks()])
    assert repository.disagreements(root, url="https://github.com/a-fork/skin", branch="dev") == []
    assert 'REPOSITORY_URL = "https://github.com/a-fork/skin"' in (root / "lib" / "paths.py").read_text()
    for path, text in before.items():
        after = path.read_text()
        if path.suffix == ".ipynb":
            json.loads(after)
        differing = [line for old, line in zip(text.splitlines(), after.splitlines()) if old != line]
        assert len(text.splitlines()) == len(after.splitlines())
        assert all("a-fork/skin" in line or line == 'REPOSITORY_BRANCH = "dev"' for line in differing), differing


def test_a_url_colab_cannot_open_is_refused_with_the_form_to_use(tmp_path):
    with pytest.raises(ValueError, match="https://github.com/OWNER/NAME"):
        repository.set_repository("https://gitlab.com/someone/project", project_root=project_copy(tmp_path))


def test_repository_command_shows_the_url_and_fails_when_a_copy_disagrees():
    result = subprocess.run([sys.executable, "-m", "lib", "repository"], cwd=paths.PROJECT_ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"repository: {paths.REPOSITORY_URL} (branch main)"
