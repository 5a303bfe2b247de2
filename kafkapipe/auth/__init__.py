"""Credentials for Azure storage and Kafka: msal-backed tokens, keys, SAS, and a token cache."""

from __future__ import annotations

from kafkapipe.auth.cache import TokenCache
from kafkapipe.auth.credentials import (
    STORAGE_SCOPE,
    AccessToken,
    AzureCliCredential,
    Credential,
    CredentialError,
    ManagedIdentityCredential,
    SasCredential,
    SecretSource,
    ServicePrincipalCredential,
    SharedKeyCredential,
    UnsecuredJwtCredential,
    WorkloadIdentityCredential,
    credential_from_config,
)

__all__ = [
    "STORAGE_SCOPE",
    "AccessToken",
    "AzureCliCredential",
    "Credential",
    "CredentialError",
    "ManagedIdentityCredential",
    "SasCredential",
    "SecretSource",
    "ServicePrincipalCredential",
    "SharedKeyCredential",
    "TokenCache",
    "UnsecuredJwtCredential",
    "WorkloadIdentityCredential",
    "credential_from_config",
]
