"""Committees of the best genotypes: members from population archives, published genotypes, checkpoints and
evolve supernets, trained in parallel on Ray, combined by logit sum (CoNAS), probability mean (deep ensembles),
majority vote, Caruana ensemble selection or NES ForwardSelect, and measured on clean and shifted test data.

Example::

    from evoray.commands.ensemble import ensemble
    from evoray.config import load_config
    from evoray.ensemble import EnsembleConfig

    cfg = load_config(EnsembleConfig, "ensembles/default.yaml", ["train.optim.epochs=2", "executor=local"])
    summary = ensemble(cfg)  # into runs/ensemble/<name>
"""

from evoray.ensemble.combiners import COMBINERS, Combiner, make_combiner
from evoray.ensemble.config import CommitteeConfig, EnsembleConfig, MembersConfig
from evoray.ensemble.runner import run_ensemble

__all__ = [
    "COMBINERS",
    "Combiner",
    "CommitteeConfig",
    "EnsembleConfig",
    "MembersConfig",
    "make_combiner",
    "run_ensemble",
]
