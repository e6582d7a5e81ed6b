"""Token verification: issuers, discovery, keys and claim mappings."""
