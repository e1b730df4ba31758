"""Hatchling build hook: a wheel carries the workflow and the profiles beside the package.

``workflow/`` and ``profiles/`` stay at the top of the source tree (``snakemake --profile
profiles/local`` works from a checkout); a regular wheel gets copies of them as
``ecod_jobs/_bundled/``, where :mod:`ecod_jobs.bundle` looks first. An editable install
gets none: it runs them from the source tree, so edits there take effect (a static
``force-include`` would also put a stale copy into an editable install's site-packages).
"""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

BUNDLED = {"workflow": "ecod_jobs/_bundled/workflow", "profiles": "ecod_jobs/_bundled/profiles"}


class BundleHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name == "wheel" and version == "standard":
            build_data["force_include"].update(BUNDLED)
