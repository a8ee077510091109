"""Build script. Metadata and dependencies live in setup.cfg; this file only ships the
configs: the checkout's top-level ``conf/`` (the one source of truth) becomes the
package ``snnrun.conf`` in a wheel, found at run time by ``snnrun.app.schema.config_dir``.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["snnrun", "snnrun.*"]), "snnrun.conf"],
    package_dir={"snnrun.conf": "conf"},
    package_data={
        "snnrun.conf": ["*.yaml", "**/*.yaml"],
        "snnrun.snn": ["*.cpp"],  # the native backend's source, compiled on first use
    },
)
