from tests.oidc.harness import oidc_node_modules, oidc_provider

__all__ = ["oidc_node_modules", "oidc_provider"]
