"""georank: distributed batch geotagging with GeoRanker (Qwen2-VL + LoRA + score head).

The package is a Spark-free core (one module per step: ``decode``, ``embed``,
``retrieve``, ``candidates``, ``rank``, ``decide``, ``write``) plus one small
Spark layer (:mod:`georank.spark`) that only partitions data and calls the core.
"""

__version__ = "0.1.0"
