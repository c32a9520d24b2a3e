"""Workstation subcommands: ``train``, ``convert``, ``convert-detector``, ``drift``, ``edgetpu``.

Registration imports nothing heavy; TensorFlow loads only when a command runs. ``train``, ``convert``
and ``drift`` need TensorFlow and Keras (the ``[convert]`` extra); where they are not installed
(a device venv, ``make run``'s) those commands answer with one line naming the extra and exit 2.
``edgetpu`` reads the flatbuffer with the device runtime and works without them.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

NEEDS_CONVERT_EXTRA = ("train", "convert", "drift")
CONVERT_EXTRA_MODULES = ("tensorflow", "keras")
INSTALL_CONVERT = "pip install 'fer-edge[convert]'"


def missing_convert_module() -> str | None:
    """The first module of the ``[convert]`` extra that is not installed, or None (nothing is imported)."""
    for name in CONVERT_EXTRA_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # a broken or half-removed install
            return name
    return None


def _needs_convert_extra(parser: argparse.ArgumentParser, command: str, missing: str) -> None:
    """Make ``fer-edge <command>`` answer with the fix whatever its arguments: without the extra no
    argument is required (argparse would otherwise ask for --data instead of naming what is missing)."""
    from edge.errors import FerEdgeError

    for action in parser._actions:  # argparse has no public way to relax a required option
        action.required = False

    def refuse(args: argparse.Namespace) -> int:
        raise FerEdgeError(f"fer-edge {command} needs the [convert] extra ({missing} is not installed): "
                           f"{INSTALL_CONVERT} (in a clone: pip install -e '.[convert]')")

    parser.set_defaults(func=refuse)


def register(sub: argparse._SubParsersAction) -> None:
    from convert.recipes import RECIPES

    missing = missing_convert_module()
    needs = f" [needs the convert extra: {INSTALL_CONVERT}]" if missing else ""

    p = sub.add_parser("train",
                       help="train an expression model on FER2013 (Training; PublicTest for early stopping)" + needs,
                       description="Train a named recipe. Checkpoints every epoch into --out; --resume continues "
                                   "an interrupted run. PrivateTest is never used.")
    p.add_argument("--data", required=True, help="fer2013.csv[.gz], an image-folder root (train/, test/), or a pre-parsed .npz")
    p.add_argument("--recipe", default="mini_xception", choices=sorted(RECIPES), help="named recipe (default: %(default)s)")
    p.add_argument("--out", help="output folder (default: runs/<recipe>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    p.add_argument("--seed", type=int, help="override the recipe's seed")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--limit", type=int, help="use only the first N training images (quick checks)")
    p.add_argument("--ferplus", metavar="fer2013new.csv",
                   help="FER+ votes, for the *_ferplus recipes: they train on the vote distributions with the "
                        "PyTorch trainer (on a GPU when there is one, else the CPU)")
    p.add_argument("--time-budget", type=float, metavar="S",
                   help="*_ferplus recipes: seconds of training; the schedule shrinks to fit")
    p.add_argument("--fer2013-weight", type=float, metavar="W",
                   help="*_ferplus recipes: weight of the FER2013 label in the target (0: FER+ votes only)")
    p.set_defaults(func=_train)
    if missing:
        _needs_convert_extra(p, "train", missing)

    for module_name, command in (("convert.quantize", "convert"), ("convert.detector", "convert-detector"),
                                 ("convert.drift", "drift"), ("convert.edgetpu", "edgetpu")):
        try:
            module = __import__(module_name, fromlist=["add_arguments", "run"])
        except ModuleNotFoundError:
            continue
        q = sub.add_parser(command, help=module.HELP + (needs if command in NEEDS_CONVERT_EXTRA else ""),
                           description=module.DESCRIPTION)
        module.add_arguments(q)
        q.set_defaults(func=module.run)
        if missing and command in NEEDS_CONVERT_EXTRA:
            _needs_convert_extra(q, command, missing)


def _train(args) -> int:
    from convert.data import load_split
    from convert.recipes import get_recipe
    from convert.train import train

    recipe = get_recipe(args.recipe, epochs=args.epochs, seed=args.seed, batch_size=args.batch_size,
                        fer2013_weight=args.fer2013_weight)
    if recipe.targets == "ferplus":
        return _train_ferplus(args, recipe)
    x_train, y_train = load_split(args.data, "Training")
    x_val, y_val = load_split(args.data, "PublicTest")
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    out = Path(args.out or f"runs/{recipe.name}")
    summary = train(recipe, x_train, y_train, x_val, y_val, out, resume=args.resume)
    print(f"best PublicTest accuracy {summary['best_val_accuracy']:.4f} at epoch {summary['best_epoch']} "
          f"of {summary['epochs_run']} ({summary['params']} params, {summary['wall_seconds']:.0f} s); "
          f"model: {out / 'best.keras'}; batch norms recalibrated on clean Training images: "
          f"{out / 'recalibrated.keras'} (convert this one)")
    return 0


def _train_ferplus(args, recipe) -> int:
    """Soft-target recipes train with the PyTorch trainer (the Keras trainer takes one label per face)."""
    try:
        import torch

        from convert.trainer import recipe_arrays, train_torch
    except ModuleNotFoundError as exc:
        from edge.errors import FerEdgeError

        raise FerEdgeError(f"recipe {recipe.name} trains on FER+ votes with the PyTorch trainer, and {exc.name} is "
                           "missing; install it: pip install torch") from None
    xt, yt, xv, yv = recipe_arrays(recipe, args.data, args.ferplus)
    if args.limit:
        xt, yt = xt[: args.limit], yt[: args.limit]
    out = Path(args.out or f"runs/{recipe.name}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    s = train_torch(recipe, xt, yt, xv, yv, out, resume=args.resume, device=device, time_budget_s=args.time_budget)
    what = "mean of FER2013 and FER+" if recipe.select == "joint" else "FER+"
    print(f"best {what} PublicTest accuracy {s['best_val_accuracy']:.4f} at epoch {s['best_epoch']} of "
          f"{s['epochs_run']} on {device} ({s['wall_seconds']:.0f} s); convert {out / 'recalibrated.keras'}")
    return 0
