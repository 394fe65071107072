"""The evaluation: the metric (:mod:`~georank.eval.metric`), the benchmark readers
(:mod:`~georank.eval.benchmarks`), the baselines, the evaluate job's Spark-free core
(:mod:`~georank.eval.core`) and the reference's own candidates (:mod:`~georank.eval.reference`),
the report's numbers, files and plots (:mod:`~georank.eval.report`, :mod:`~georank.eval.render`,
:mod:`~georank.eval.plots`) and the offline world map (:mod:`~georank.eval.worldmap`).
The Spark layer that runs it is :mod:`georank.spark.evaluate`."""
