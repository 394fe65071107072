"""The whole config: :class:`GeorankConfig`, its sections in the order of the pipeline's steps."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from georank.config.base import _Section
from georank.config.learning import DemoConfig, EvaluateConfig, TrainConfig
from georank.config.platform import S3Config, SparkConfig, TablesConfig, WriteConfig
from georank.config.publish import PublishConfig
from georank.config.steps import (
    CandidatesConfig,
    DecideConfig,
    DecodeConfig,
    EmbedConfig,
    IndexConfig,
    InputConfig,
    RankConfig,
    RetrieveConfig,
    SkipConfig,
)
from georank.uris import local_of


class GeorankConfig(_Section):

    """The whole config. Sections mirror the pipeline's steps."""

    spark: SparkConfig = Field(default_factory=SparkConfig)
    tables: TablesConfig = Field(default_factory=TablesConfig)
    write: WriteConfig = Field(default_factory=WriteConfig)
    s3: S3Config = Field(default_factory=S3Config)
    input: InputConfig = Field(default_factory=InputConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    retrieve: RetrieveConfig = Field(default_factory=RetrieveConfig)
    candidates: CandidatesConfig = Field(default_factory=CandidatesConfig)
    rank: RankConfig = Field(default_factory=RankConfig)
    skip: SkipConfig = Field(default_factory=SkipConfig)
    decide: DecideConfig = Field(default_factory=DecideConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)  # jobs/publish.py (georank.config.publish)
    project_root: str = ""  # set by load_config: folder that relative URIs resolve against

    def resolve(self, uri: str) -> str:
        """Absolute form of a config URI: other schemes (``s3://``, ``s3a://``) pass through; a
        ``file:`` URI becomes its local path (``file:///data/night%2001`` -> ``/data/night 01``,
        ``file://localhost/...`` too), so it works wherever a local path does; relative paths
        (``file:rel`` too) resolve against :attr:`project_root`. A ``file:`` URI naming another
        host is an InputError."""
        if uri.startswith("file:"):
            uri = str(local_of(uri))
        if "://" in uri or os.path.isabs(uri):
            return uri
        return str(Path(self.project_root or ".").resolve() / uri)
