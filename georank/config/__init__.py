"""The one typed config of georank.

Loaded once on the driver from ``conf/*.yaml``, overridden from the command line
with ``--set section.key=value`` (the value is parsed as YAML, so ``3`` is an int
and ``[1, 2]`` a list), and validated before any Spark work starts. A wrong key or
value raises :class:`~georank.errors.ConfigError` naming the dotted key and the
valid choices, never later inside an executor.

Executors receive the validated config as a plain ``dict`` (``cfg.model_dump()``)
and rebuild it with :meth:`GeorankConfig.model_validate`; nothing else is
pickled into closures.

Relative paths in the config (``tables.*``, ``*_uri``, ``demo.root``...) are
resolved against the project root (:func:`project_home`), so a job behaves the
same whatever directory it is launched from and wherever its config file lives.

The package is split by job: :mod:`.base` (the section base class), :mod:`.platform` (Spark,
tables, the commit, S3), :mod:`.steps` (the pipeline's steps), :mod:`.learning` (demo, training,
evaluation), :mod:`.publish`, :mod:`.model` (the whole config), :mod:`.overrides` (``--set``),
:mod:`.messages` (error sentences that never show a value) and :mod:`.load` (loading and
validation); import from ``georank.config``.
"""

from __future__ import annotations

from georank.config.base import Device, DType
from georank.config.learning import BenchmarkColumnsConfig, DemoConfig, EvaluateConfig, TrainConfig, TrainDistributedConfig, TrainLoraConfig
from georank.config.load import load_config, project_home, validate_config
from georank.config.model import GeorankConfig
from georank.config.overrides import parse_override
from georank.config.platform import GpuConfig, S3Config, SparkConfig, TablesConfig, WriteConfig
from georank.config.steps import (
    CandidatesConfig,
    DecideConfig,
    DecodeConfig,
    EmbedConfig,
    GeneratedConfig,
    IndexConfig,
    InputConfig,
    PrototypeConfig,
    RankConfig,
    RetrieveConfig,
    SkipConfig,
)

__all__ = [
    "Device",
    "DType",
    "GpuConfig",
    "SparkConfig",
    "TablesConfig",
    "WriteConfig",
    "S3Config",
    "InputConfig",
    "DecodeConfig",
    "EmbedConfig",
    "IndexConfig",
    "RetrieveConfig",
    "GeneratedConfig",
    "PrototypeConfig",
    "CandidatesConfig",
    "RankConfig",
    "SkipConfig",
    "DecideConfig",
    "DemoConfig",
    "TrainLoraConfig",
    "TrainDistributedConfig",
    "TrainConfig",
    "BenchmarkColumnsConfig",
    "EvaluateConfig",
    "GeorankConfig",
    "load_config",
    "parse_override",
    "project_home",
    "validate_config",
]
