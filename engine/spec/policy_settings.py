"""Per-app policy settings, as written under `policy:` of an app in gitops.yaml.
The defaults are what a careful platform team would choose."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class Enforcement(str, Enum):
    REQUIRE = "require"  # an error: nothing is applied
    WARN = "warn"  # reported, applied anyway
    OFF = "off"


_FALSE_WORDS = ("off", "no", "n", "false")


def _enforcement(value: object) -> object:
    """YAML 1.1 reads `off` (`Off`, `OFF`, `no`) as false: false means off.
    `true` says nothing of which of require or warn is meant, and stays refused."""
    if value is False:
        return Enforcement.OFF
    if isinstance(value, str):  # gitops.yaml passes the word as written (engine/spec/appspec.py)
        return "off" if value.lower() in _FALSE_WORDS else value.lower()
    return value


EnforcementWord = Annotated[Enforcement, BeforeValidator(_enforcement)]


class PolicySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # Namespaces the app may write to; empty means only the app's own default namespace.
    allowed_namespaces: list[str] = Field(default_factory=list, alias="allowedNamespaces")
    # Kinds the app may contain; empty means any kind except cluster-scoped RBAC.
    allowed_kinds: list[str] = Field(default_factory=list, alias="allowedKinds")
    # ClusterRole / ClusterRoleBinding are refused unless allowed.
    allow_cluster_rbac: bool = Field(False, alias="allowClusterRBAC")
    allow_privileged: bool = Field(False, alias="allowPrivileged")
    allow_host_path: bool = Field(False, alias="allowHostPath")
    allow_host_network: bool = Field(False, alias="allowHostNetwork")
    # Images must name a tag other than `latest` (or a digest).
    allow_latest_tag: bool = Field(False, alias="allowLatestTag")
    # Registries images may come from, e.g. ["registry.example.com", "docker.io"]; empty means any.
    allowed_registries: list[str] = Field(default_factory=list, alias="allowedRegistries")
    # Containers without resource limits: an error, a warning, or allowed.
    resource_limits: EnforcementWord = Field(Enforcement.WARN, alias="resourceLimits")
