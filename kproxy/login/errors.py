"""Why a login could not produce a credential.

The plugin runs under kubectl, which shows a failing plugin's stderr to the person, so
each error is one line they can act on: what failed, at which issuer, and what to do.
Third-party exceptions (requests, authlib, pyjwt) are wrapped here at the boundary and
never reach the command as tracebacks.
"""

from __future__ import annotations


class LoginError(Exception):
    """The credential could not be obtained; the command exits with 1."""


class TokenVerificationError(LoginError):
    """A token from the provider failed verification and was not cached."""


class PersonNeededError(LoginError):
    """Only a person can log in now, and kubectl said none is at the terminal."""


class KubeconfigError(Exception):
    """The kubeconfig cannot be written as asked; the command exits with 2."""
