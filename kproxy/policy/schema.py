"""The JSON Schema of ``UniversityPolicy`` files, for editors and CI checks.

The schema is generated from the pydantic model, and a copy ships in the package
(``universitypolicy.schema.json``) so editors and ``check-jsonschema`` can use it without
running kproxy; a test keeps the copy equal to the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from kproxy.policy.model import UniversityPolicy

SCHEMA_FILE: Final = Path(__file__).with_name("universitypolicy.schema.json")
SCHEMA_ID: Final = "https://kproxy.io/schemas/v1alpha1/universitypolicy.json"


def policy_json_schema() -> dict[str, Any]:
    """Generate the schema from the model, with camelCase keys as files use them."""
    schema = UniversityPolicy.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }


def policy_json_schema_text() -> str:
    return json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n"
