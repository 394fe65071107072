"""The Spark layer: builds the session, partitions data and calls the Spark-free core.

Nothing here computes a prediction; every step's logic lives in a core module.
"""
