"""Policies: request attributes, university files, namespace grants, decisions."""
