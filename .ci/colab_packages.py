"""Colab's package versions for a Colab-equivalent environment (`bash .ci/colab`). Standard library only.

.ci/colab-packages.txt holds Colab's version of every package that environment installs: the packages the project
imports on Colab (TOP_LEVEL) and all they depend on, as Colab's CPU runtime has them (shared/colab/pip-freeze.txt,
from googlecolab/backend-info). It is committed so that CI works without ../shared; `check` proves it still agrees
with Colab's list when that list is there.

    python3 .ci/colab_packages.py check [COLAB_FREEZE]      # the committed pins agree with Colab's list
    python3 .ci/colab_packages.py regenerate [COLAB_FREEZE] # rebuild the pins in a scratch venv (about a minute)
    VENV/bin/python .ci/colab_packages.py verify            # this interpreter has exactly the pins
    VENV/bin/python .ci/colab_packages.py versions          # one line of versions; fails if TF-DF is importable
    VENV/bin/python .ci/colab_packages.py table             # name | Colab's version | used, for TOP_LEVEL
"""

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PINS = PROJECT_ROOT / ".ci" / "colab-packages.txt"
COLAB_FREEZE = PROJECT_ROOT.parent / "shared" / "colab" / "pip-freeze.txt"
NOT_ON_COLAB = "# not on Colab's list"  # marks a pin pip chose on Python 3.11 for a dependency Colab's list lacks
# What the project imports on Colab (lib/, notebooks, tests), with what tensorflowjs imports there (tf_keras,
# tensorflow-hub, jax, flax); ipywidgets decides how tqdm shows progress in a notebook; click, tenacity and
# python-dotenv are what the setup's papermill and kaggle need beyond these (Colab has them, so the setup installs
# them only here if they are missing); pip, setuptools and wheel run the setup cell's `pip install`. Not here: tensorflowjs and papermill (Colab lacks them: the setup
# cell installs them), opencv-python and opencv-contrib-python (Colab also has them; the project uses the headless
# build, and the GUI ones need system libraries this machine lacks), google-colab (not on PyPI: tests/fake_colab).
TOP_LEVEL = ("tensorflow", "keras", "tensorboard", "numpy", "pandas", "scikit-learn", "opencv-python-headless",
             "pillow", "matplotlib", "seaborn", "PyYAML", "tqdm", "requests", "nbformat", "nbclient", "ipykernel",
             "ipython", "jupyter_client", "ipywidgets", "kaggle", "packaging", "tf_keras", "tensorflow-hub", "jax",
             "jaxlib", "flax", "pytest", "click", "tenacity", "python-dotenv", "pip", "setuptools", "wheel")
VERSIONS_SHOWN = ("tensorflow", "keras", "tensorflowjs", "numpy", "tensorboard", "pandas", "scikit-learn",
                  "opencv-python-headless", "kaggle", "papermill", "jax", "tf-keras")
DECISION_FORESTS = "tensorflow_decision_forests"


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_freeze(text):
    """{normalized name: (name, version)} of pip freeze text's `name==version` lines (URL installs left out)."""
    pins = {}
    for line in text.splitlines():
        requirement = line.split("#", 1)[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==", 1)
            pins[normalize(name)] = (name.strip(), version.strip())
    return pins


def read_freeze(path):
    return parse_freeze(Path(path).read_text())


def read_pins(path=PINS):
    """({normalized name: version} of Colab's packages, {normalized name: version} of those marked not on Colab)."""
    colab, not_on_colab = {}, {}
    for line in Path(path).read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==", 1)
            (not_on_colab if NOT_ON_COLAB in line else colab)[normalize(name)] = version.strip()
    return colab, not_on_colab


def disagreements(pins_path=PINS, freeze_path=COLAB_FREEZE):
    """Sentences naming each committed pin that differs from Colab's list; empty when they agree."""
    colab = read_freeze(freeze_path)
    pinned, not_on_colab = read_pins(pins_path)
    problems = [f"{name}=={version} is pinned, Colab has {colab[name][1] if name in colab else 'no ' + name}"
                for name, version in sorted(pinned.items()) if colab.get(name, (None, None))[1] != version]
    problems += [f"{name} is marked not on Colab's list, which has {name}=={colab[name][1]}"
                 for name in sorted(not_on_colab) if name in colab]
    problems += [f"{name} (the project imports it) is not pinned" for name in map(normalize, TOP_LEVEL)
                 if name not in pinned and name not in not_on_colab]
    return problems


def installed():
    return {normalize(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()
            if dist.metadata["Name"]}


def report(problems, prefix, fix, success):
    """Print each problem and the fix (exit status 1), or the success line (0)."""
    for problem in problems:
        print(f"{prefix}: {problem}", file=sys.stderr)
    if problems:
        print(f"{fix}: rebuild the pins with `python3 .ci/colab_packages.py regenerate`", file=sys.stderr)
        return 1
    print(success)
    return 0


def check(freeze_path=COLAB_FREEZE):
    return report(disagreements(PINS, freeze_path), PINS.name, f"Colab's list ({freeze_path}) changed",
                  f"{PINS.name} agrees with {freeze_path}")


def verify():
    """This interpreter has every pin at its version and nothing else."""
    pinned, not_on_colab = read_pins()
    wanted, have = {**pinned, **not_on_colab}, installed()
    problems = [f"{name} {have.get(name, 'missing')}, pinned {version}" for name, version in sorted(wanted.items())
                if have.get(name) != version]
    problems += [f"{name} {version} installed, not pinned" for name, version in sorted(have.items())
                 if name not in wanted]
    return report(problems, "not Colab's", f"the environment differs from {PINS}",
                  f"{len(wanted)} packages, each at the version of {PINS.name} ({len(not_on_colab)} not on Colab's list)")


def versions():
    """Print the versions this environment runs with; fail if TensorFlow Decision Forests is importable."""
    have = installed()
    print(f"Python {sys.version.split()[0]} | " + " | ".join(
        f"{name} {have.get(normalize(name), 'absent')}" for name in VERSIONS_SHOWN))
    if importlib.util.find_spec(DECISION_FORESTS) is not None:
        print(f"{DECISION_FORESTS} is importable: Colab has no TF-DF, this environment must not either", file=sys.stderr)
        return 1
    print(f"{DECISION_FORESTS}: absent, as on Colab")
    return 0


def table(freeze_path=COLAB_FREEZE):
    """Markdown table: each TOP_LEVEL package and each package the setup installed, Colab's version, used here."""
    colab = {name: version for name, (_, version) in read_freeze(freeze_path).items()} if Path(freeze_path).is_file() \
        else read_pins()[0]
    have, (pinned, not_on_colab) = installed(), read_pins()
    names = list(dict.fromkeys([*map(normalize, TOP_LEVEL),
                                *(name for name in sorted(have) if have[name] != {**pinned, **not_on_colab}.get(name))]))
    print("| package | Colab's version | used |\n|---|---|---|")
    for name in names:
        print(f"| {name} | {colab.get(name, 'not on Colab')} | {have.get(name, 'absent')} |")
    return 0


def regenerate(freeze_path=COLAB_FREEZE):
    """Install TOP_LEVEL in a scratch venv with Colab's list as constraints and write what pip installed as PINS."""
    colab = read_freeze(freeze_path)
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "colab-constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in colab.values()))
        venv = Path(folder) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "--quiet", f"pip=={colab['pip'][1]}"], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--constraint", str(constraints), *TOP_LEVEL],
                       check=True)
        frozen = subprocess.run([python, "-m", "pip", "freeze", "--all"], check=True, capture_output=True,
                                text=True).stdout
    lines = []
    for name, version in sorted(parse_freeze(frozen).values(), key=lambda item: normalize(item[0])):
        on_colab = colab.get(normalize(name), (None, None))[1] == version
        lines.append(f"{name}=={version}" + ("" if on_colab else f"  {NOT_ON_COLAB}"))
    header = PINS.read_text().split("\n\n", 1)[0] if PINS.is_file() else "# Colab's package versions"
    PINS.write_text(header + "\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {PINS} ({len(lines)} packages)")
    return check(freeze_path)


COMMANDS = {"check": check, "verify": verify, "versions": versions, "table": table, "regenerate": regenerate}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: colab_packages.py {{{','.join(COMMANDS)}}} [COLAB_FREEZE]\n\n{__doc__}")
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
