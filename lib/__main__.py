"""Command line: `python -m lib run|sweep|check|notebook|compare|serve|repository ...`.

    python -m lib run params/demo.yaml                      # the whole pipeline into outputs/demo/
    python -m lib run params/demo.yaml --name quick -p train.epochs=1
    python -m lib run params/demo.yaml --resume             # continue an interrupted run
    python -m lib run params/demo.yaml --until 03_train     # train only (the test split stays unread)
    python -m lib sweep params/demo.yaml --seeds 3          # one run per seed, and their mean and spread
    python -m lib check params/*.yaml                       # validate params files only
    python -m lib notebook outputs/demo 04_evaluate         # rerun one notebook on an existing run
    python -m lib compare outputs/                          # table of every run's params and metrics
    python -m lib serve outputs/demo                        # the web page with that run's model
    python -m lib repository https://github.com/OWNER/NAME  # a fork: Colab badges and clones point at it
"""

import argparse
import logging
import sys

from lib import paths
from lib.errors import PipelineError


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # papermill's per-notebook INFO lines repeat what the runner prints; --log-output shows cell output instead.
    logging.getLogger("papermill").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m lib", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the five notebooks on a params file")
    run.add_argument("params_file")
    run.add_argument("--name", help="run folder name under outputs/ (default: the params file's name)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override a parameter, e.g. -p train.epochs=1 (repeatable)")
    run.add_argument("--resume", action="store_true", help="continue an existing run folder")
    run.add_argument("--until", default="05_convert_tfjs", metavar="NOTEBOOK",
                     help="stop after this notebook, e.g. 03_train (default: run all five)")
    run.add_argument("--outputs", default=str(paths.OUTPUTS_DIR), help="where run folders go (default: outputs/)")
    run.add_argument("--kernel", default="python3", help="Jupyter kernel to execute with (default: python3)")
    run.add_argument("--log-output", action="store_true", help="stream every cell's output to the terminal")

    sweep = commands.add_parser("sweep", help="run a params file once per seed and aggregate the test metrics")
    sweep.add_argument("params_file")
    sweep.add_argument("--seeds", type=int, default=3, help="how many seeds: the file's seed and the next ones [3]")
    sweep.add_argument("--name", help="sweep name: runs <name>-seed<seed>, record <name>-sweep.json "
                                      "(default: the params file's name)")
    sweep.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                       help="override a parameter in every run, e.g. -p train.epochs=1 (repeatable; not seed)")
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    sweep.add_argument("--until", default="05_convert_tfjs", metavar="NOTEBOOK",
                       help="stop every run after this notebook, e.g. 03_train: choose on validation before the "
                            "test split is read (default: run all five)")
    sweep.add_argument("--outputs", default=str(paths.OUTPUTS_DIR), help="where run folders go (default: outputs/)")
    sweep.add_argument("--no-shared-data", dest="share_data", action="store_false",
                       help="run notebooks 01-02 in every run instead of copying the first run's products")
    sweep.add_argument("--kernel", default="python3")
    sweep.add_argument("--log-output", action="store_true")

    check = commands.add_parser("check", help="validate params files without running anything")
    check.add_argument("params_files", nargs="+")
    check.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")

    notebook = commands.add_parser("notebook", help="execute one notebook on an existing run folder")
    notebook.add_argument("run_dir")
    notebook.add_argument("notebook", help="e.g. 04_evaluate")
    notebook.add_argument("--kernel", default="python3")
    notebook.add_argument("--log-output", action="store_true")

    compare = commands.add_parser("compare", help="compare every run folder's params and metrics")
    compare.add_argument("outputs_dir", nargs="?", default=str(paths.OUTPUTS_DIR))

    serve = commands.add_parser("serve", help="serve the web page with a run's TF.js model on 127.0.0.1")
    serve.add_argument("run_dir")
    serve.add_argument("--port", type=int, default=8000)

    repository = commands.add_parser(
        "repository", help="show the project's repository, or set it (lib/paths.py, README badges, notebooks)")
    repository.add_argument("url", nargs="?", help="https://github.com/OWNER/NAME; without it: show and check")
    repository.add_argument("--branch", help=f"branch the badges open (default: {paths.REPOSITORY_BRANCH})")
    return parser


def run_command(args):
    from lib import pipeline

    pipeline.run(args.params_file, args.param, name=args.name, resume=args.resume, outputs_dir=args.outputs,
                 kernel_name=args.kernel, log_output=args.log_output, until=args.until)
    return 0


def sweep_command(args):
    from lib import sweep

    sweep.run_sweep(args.params_file, seeds=args.seeds, overrides=args.param, name=args.name,
                    outputs_dir=paths.resolve(args.outputs), resume=args.resume, kernel_name=args.kernel,
                    log_output=args.log_output, share_data=args.share_data, until=args.until)
    return 0


def check_command(args):
    from lib import params

    for path in args.params_files:
        loaded = params.load(path, args.param, outputs_dir=paths.OUTPUTS_DIR)
        print(f"{path}: ok (run name {loaded.name!r})")
    return 0


def notebook_command(args):
    from lib import pipeline

    seconds = pipeline.run_notebook(paths.resolve(args.run_dir), args.notebook, kernel_name=args.kernel,
                                    log_output=args.log_output)
    print(f"{args.notebook}: done in {seconds:.1f} s")
    return 0


def compare_command(args):
    from lib import compare

    return compare.main([args.outputs_dir])


def serve_command(args):
    from lib import serve

    serve.serve(paths.resolve(args.run_dir), port=args.port)
    return 0


def repository_command(args):
    from lib import repository

    url, branch = args.url or paths.REPOSITORY_URL, args.branch or paths.REPOSITORY_BRANCH
    if args.url or args.branch:
        try:
            changed = repository.set_repository(url, branch)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        url = url.strip().rstrip("/").removesuffix(".git")
        print(f"rewrote: {', '.join(changed) or 'nothing (already so)'}")
    problems = repository.disagreements(url=url, branch=branch)
    print(f"repository: {url} (branch {branch})")
    for problem in problems:
        print(f"disagrees: {problem}", file=sys.stderr)
    return 1 if problems else 0


COMMANDS = {"run": run_command, "sweep": sweep_command, "check": check_command, "notebook": notebook_command,
            "compare": compare_command, "serve": serve_command, "repository": repository_command}

if __name__ == "__main__":
    sys.exit(main())
