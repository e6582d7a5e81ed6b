"""kproxy: federated identities, impersonated at a Kubernetes API server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kproxy")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
