"""The simulated Greengrass nucleus: IPC server and token exchange service."""

from __future__ import annotations

from localcloud.credentials import CredentialRegistry
from localcloud.nucleus.server import Nucleus, Published
from localcloud.nucleus.tes import TokenExchangeService

__all__ = ["CredentialRegistry", "Nucleus", "Published", "TokenExchangeService"]
