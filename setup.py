import re

from setuptools import find_packages, setup

with open("scheduler0/__init__.py") as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

with open("README.md") as f:
    long_description = f.read()

setup(
    name="scheduler0",
    version=version,
    description="A distributed cron-job server on Twisted, Raft and SQLite",
    long_description=long_description,
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # An explicit root package_dir makes `pip install -e .` a plain path entry,
    # through which twistd finds twisted/plugins/scheduler0_plugin.py.
    package_dir={"": "."},
    packages=find_packages(include=["scheduler0", "scheduler0.*"]) + ["twisted.plugins"],
    package_data={
        "twisted": ["plugins/scheduler0_plugin.py"],
        # The dashboard served at /ui: static files, no build step.
        "scheduler0.ui": ["static/*"],
    },
    install_requires=[
        # [tls]: pyOpenSSL and service_identity, for the optional TLS on the
        # HTTP API and the Raft links (Twisted endpoint strings need them).
        "twisted[tls]>=24.3",
        "klein>=24.8",
        "treq>=24.9",
        "croniter>=2.0",
        "pyyaml>=6.0",
        "libpass>=1.9",
        "psutil>=5.9",
        # AES-GCM for the signing secrets at rest (scheduler0.sealing); already
        # pulled in by twisted[tls] through pyOpenSSL, named because we use it.
        "cryptography>=41",
        "attrs>=23.1",
        "zope.interface>=6.0",
        # zoneinfo needs the IANA database; tzdata supplies it where the OS does not.
        "tzdata",
        # GET /metrics: the Prometheus text format and its metric types, kept
        # exact by the reference implementation rather than written again.
        "prometheus-client>=0.20",
    ],
    extras_require={
        # schemathesis generates API requests from /openapi.json (the fuzz test).
        "test": ["hypothesis>=6.100", "schemathesis>=4.0"],
        # The checks CI runs beside the tests (pinned: a new release of either
        # may flag what the pinned one passes, and CI must not change by itself).
        "lint": ["ruff==0.17.6", "mypy==2.4.1", "mypy-zope==1.0.17"],
    },
    entry_points={"console_scripts": ["scheduler0 = scheduler0.cli.main:run"]},
)
