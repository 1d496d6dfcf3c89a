"""Extract from Voucherify's OpenAPI document the parts ``tests/http/test_openapi.py`` uses.

Usage (by a developer, not in CI)::

    python tests/http/openapi/extract.py PATH/TO/readOnly-openAPI.json

where the argument is a copy of Voucherify's public OpenAPI document (repository
voucherifyio/voucherify-openapi, file ``production/readOnly-openAPI.json``, commit 65c33a7).
It writes ``voucherify.json`` next to this script: the document's ``openapi`` and ``info``,
the ``responses`` of the operations the vouchercore server implements (:data:`OPERATIONS`),
and every schema of ``components.schemas`` those responses reference, transitively, plus
:data:`EXTRA_SCHEMAS` (the error object, which no operation of the document names). Each part
is copied verbatim: the test makes the OpenAPI 3.0 to JSON Schema conversion itself.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

#: The operations of the document the server implements: path, then methods.
OPERATIONS: Final = {
    "/v1/vouchers": ("post",),
    "/v1/vouchers/{code}": ("get", "post", "put", "delete"),
    "/v1/vouchers/{code}/enable": ("post",),
    "/v1/vouchers/{code}/disable": ("post",),
    "/v1/vouchers/{code}/balance": ("post",),
    "/v1/vouchers/{code}/transactions": ("get",),
    "/v1/vouchers/{code}/transactions/export": ("post",),
    "/v1/vouchers/importCSV": ("post",),
    "/v1/vouchers/{code}/sessions/{sessionKey}": ("delete",),
    "/v1/vouchers/{code}/redemption": ("get",),
    "/v1/validations": ("post",),
    "/v1/redemptions": ("post",),
    "/v1/redemptions/{redemptionId}": ("get",),
    "/v1/redemptions/{redemptionId}/rollback": ("post",),
    "/v1/redemptions/{parentRedemptionId}/rollbacks": ("post",),
    "/v1/exports/{exportId}": ("get", "delete"),
    "/v1/exports/{export_Id}": ("get",),
    "/v1/async-actions/{asyncActionId}": ("get",),
}
#: Schemas kept though no kept operation references them: Voucherify's error object.
EXTRA_SCHEMAS: Final = ("Error",)
_PREFIX: Final = "#/components/schemas/"


def _refs(node: Any) -> Iterator[str]:
    """Every schema name a ``$ref`` under *node* points to."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                if not value.startswith(_PREFIX):
                    raise ValueError(f"a reference outside components.schemas: {value}")
                yield value[len(_PREFIX) :]
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def extract(document: dict[str, Any]) -> dict[str, Any]:
    """The parts of *document* the test uses (see the module docstring)."""
    paths: dict[str, Any] = {}
    for path, methods in OPERATIONS.items():
        kept = {}
        for method in methods:
            operation = document["paths"][path][method]
            kept[method] = {
                "operationId": operation["operationId"],
                "responses": operation["responses"],
            }
        paths[path] = kept
    schemas = document["components"]["schemas"]
    names: set[str] = set()
    waiting = [*_refs(paths), *EXTRA_SCHEMAS]
    while waiting:
        name = waiting.pop()
        if name not in names:
            names.add(name)
            waiting.extend(_refs(schemas[name]))
    return {
        "openapi": document["openapi"],
        "info": document["info"],
        "paths": paths,
        "components": {"schemas": {name: schemas[name] for name in sorted(names)}},
    }


def _dumped(parts: dict[str, Any]) -> str:
    """*parts* as JSON text, one operation and one schema a line (a change shows as the lines
    of the schemas it touches)."""

    def line(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def block(entries: dict[str, Any], indent: str) -> str:
        rows = [f"{indent}{line(name)}:{line(value)}" for name, value in entries.items()]
        return "{\n" + ",\n".join(rows) + "\n" + indent[:-1] + "}"

    schemas = parts["components"]["schemas"]
    return (
        "{\n"
        f' "openapi":{line(parts["openapi"])},\n'
        f' "info":{line(parts["info"])},\n'
        f' "paths":{block(parts["paths"], "  ")},\n'
        f' "components":{{"schemas":{block(schemas, "  ")}}}\n'
        "}\n"
    )


def main(argv: list[str]) -> int:
    """Read the document named by the one argument; write ``voucherify.json`` here."""
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    document = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    target = Path(__file__).with_name("voucherify.json")
    target.write_text(_dumped(extract(document)), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
