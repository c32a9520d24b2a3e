"""Workstation subcommands: ``train``, ``convert``, ``drift``, ``edgetpu``.

Registration imports nothing heavy; TensorFlow loads only when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from convert.recipes import RECIPES

    p = sub.add_parser("train", help="train an expression model on FER2013 (Training; PublicTest for early stopping)",
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
    p.set_defaults(func=_train)

    for module_name, command in (("convert.quantize", "convert"), ("convert.drift", "drift"),
                                 ("convert.edgetpu", "edgetpu")):
        try:
            module = __import__(module_name, fromlist=["add_arguments", "run"])
        except ModuleNotFoundError:
            continue
        q = sub.add_parser(command, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(q)
        q.set_defaults(func=module.run)


def _train(args) -> int:
    from convert.data import load_split
    from convert.recipes import get_recipe
    from convert.train import train

    recipe = get_recipe(args.recipe, epochs=args.epochs, seed=args.seed, batch_size=args.batch_size)
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
