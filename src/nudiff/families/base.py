"""What a family of models gives the core: its config rules, the shared features it supports,
its samplers, how it builds ``(process, model, loss)``, loads a run and samples it.

A family is one kind of generative process: the linear Gaussian process (with its multi-scale,
soft-conditioning and conditional variants as features), Beta diffusion, Neural Diffusion
Models, a SiD-distilled generator. The core (trainer, checkpoints, CLI, run folders) talks to a
family only through this interface, and finds it with :func:`nudiff.families.family_of`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing a family must not import every config
    from nudiff.config import Config


class Family:
    """Base of the families. Subclasses set the class attributes and override the builders.

    ``name``: the registry name; ``key``: how a config selects it, as error messages name it
    (``process.family: beta``); ``sections``: the config keys only this family reads (another
    family's config holding one is an error); ``features``: the names of the shared features of
    :data:`nudiff.families.features.FEATURES` it honours (every other active feature is refused);
    ``label``: its samplers' adjective in messages (``the Gaussian sampler 'ddim'``);
    ``selected_by``: what selects it, in words (``process.family: beta``); ``description``: one
    line for the docs.
    """

    name: str = ""
    key: str = ""
    label: str = ""
    selected_by: str = ""
    description: str = ""
    sections: tuple[str, ...] = ()
    features: frozenset[str] = frozenset()

    # ---------------------------------------------------------------------------- config
    def claims(self, cfg: Config) -> bool:
        """Whether ``cfg`` asks for this family (it gets it unless a family that comes first
        in :func:`nudiff.families.family_name` claims it too)."""
        return False

    def samplers(self, cfg: Config) -> tuple[str, ...]:
        """The sampler names this family's models sample with."""
        raise NotImplementedError

    def check(self, cfg: Config) -> None:
        """The family's own rules on a config (its sections); a ``ValueError`` names the key.
        Checks only: a validator never changes the config."""

    # --------------------------------------------------------------------------- objects
    def build_process(self, cfg: Config, dataset=None):
        """The process; data-fitted parts from ``dataset`` (None: placeholders to load)."""
        raise NotImplementedError

    def build_model(self, cfg: Config, process, dataset=None):
        """The trained network(s) around the process (data moments from ``dataset``)."""
        raise NotImplementedError

    def build_loss(self, cfg: Config, process, model):
        """The training loss (the trainer's :class:`~nudiff.training.protocols.Loss`)."""
        raise NotImplementedError

    def training_parts(self, cfg: Config) -> dict:
        """What :func:`nudiff.run.train` hands the trainer: ``model``, ``loss``, ``dataset``
        (None: data-free), ``process``, ``sample_fn`` (grids during training), ``augment``."""
        raise NotImplementedError

    def load(self, cfg: Config, state: dict, device):
        """The model of a run from its config and checkpoint ``state`` (what sampling uses)."""
        process = self.build_process(cfg)  # data-fitted buffers come from the state dict
        model = self.build_model(cfg, process)
        model.load_state_dict(state)
        return model.to(device).eval()

    # -------------------------------------------------------------------------- sampling
    def default_labels(self, cfg: Config, n: int):
        """Labels ``(n,)`` for a sampling call that gives none (None: unconditional)."""
        return None

    def sample(self, cfg: Config, model, n: int, *, seed: int, start: int, device, **kw):
        """``n`` samples (a :class:`~nudiff.samplers.SampleResult`), sample ``k`` seeded by
        ``(seed, start + k)``; ``cfg.sample`` holds the settings, already checked;
        ``kw``: ``labels`` ``(n,)`` or None, ``progress``."""
        raise NotImplementedError

    def likelihoods(self, model) -> dict[str, Callable]:
        """``nudiff eval nll``'s methods for this model: name -> log-likelihood function
        (:func:`nudiff.eval.likelihood.nll_bpd` takes them); empty: no likelihood."""
        return {}
