"""``python -m evoray.train``: retrain a genotype from scratch, or profile it.

With no arguments it runs the embedded default (DARTS_V2 at a small size on scikit-learn's digits, on the CPU in a
few minutes). ``--config configs/darts-cifar10.yaml`` is the DARTS paper's CIFAR-10 evaluation recipe.
"""

from __future__ import annotations

from collections.abc import Sequence

from evoray.cli import default_config_path, emit_json, load_from_args, log_to, make_parser, run_command
from evoray.training import TrainConfig, profile_genotype, train_genotype


def _main(argv: Sequence[str] | None) -> int:
    parser = make_parser("python -m evoray.train", __doc__.splitlines()[0], default_config_path("train-default.yaml"))
    parser.add_argument("--genotype", help="published name, .json file or genotype string (sets model.genotype)")
    parser.add_argument("--profile", action="store_true", help="report params, FLOPs and latency without training")
    args = parser.parse_args(argv)
    cfg = load_from_args(TrainConfig, args)
    if args.genotype:
        cfg.model.genotype = args.genotype
    log = log_to(args.json)
    if args.profile:
        result = profile_genotype(cfg, log)
        if args.out is not None:
            import json

            from evoray.config import save_config

            args.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, args.out / "config.yaml")
            (args.out / "profile.json").write_text(json.dumps(result, indent=1))
    else:
        result = train_genotype(cfg, args.out, log)
    if args.json:
        emit_json(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
