"""Audit log handlers: create a query, poll it, read its records (security-auditlog-*.md).
A query starts notStarted and succeeds on later polls, as the tenant's clock allows.
"""

from __future__ import annotations

import orjson

from m365guard.emulator.odata import GraphError, GraphResponse, offset_page
from m365guard.emulator.resources import Json, parse_time
from m365guard.emulator.service import Call

AUDIT_SERVICES_BY_ROLE = {"AuditLogsQuery-Exchange.Read.All": "Exchange"}


def create_audit_query(call: Call, _: dict[str, str]) -> GraphResponse:
    """POST /security/auditLog/queries: 201 with the query, status notStarted."""
    try:
        request = orjson.loads(call.request.body or b"{}")
        if not isinstance(request, dict):
            raise ValueError("not an object")
        parse_time(request["filterStartDateTime"])
        parse_time(request["filterEndDateTime"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise GraphError(400, "BadRequest",
                         "filterStartDateTime and filterEndDateTime are required ISO 8601 "
                         f"dates ({exc}).") from exc
    services = None if "AuditLogsQuery.Read.All" in call.claims.roles else {
        service for role, service in AUDIT_SERVICES_BY_ROLE.items() if role in call.claims.roles}
    resource = call.tenant.create_audit_query(request, services,
                                              call.service.faults.config.audit_record_limit)
    if call.service.faults.lose_created_query():
        raise GraphError(504, "GatewayTimeout", "The gateway timed out (the query was created).")
    body = {"@odata.context":
            f"{call.request.base_url}/v1.0/$metadata#security/auditLog/queries/$entity",
            "@odata.type": "#microsoft.graph.security.auditLogQuery", **resource}
    return GraphResponse(201, body)


def list_audit_queries(call: Call, _: dict[str, str]) -> GraphResponse:
    """GET /security/auditLog/queries (security-auditlog-list-queries.md): every query."""
    queries = [query.resource for query in list(call.tenant.audit_queries.values())]
    return offset_page(call.request, "security/auditLog/queries", queries, default=100,
                       maximum=1000)


def audit_query(call: Call, query_id: str) -> Json:
    resource = call.tenant.poll_audit_query(query_id)
    if resource is None:
        raise GraphError(404, "NotFound", f"Audit log query '{query_id}' was not found.")
    return resource


def get_audit_query(call: Call, params: dict[str, str]) -> GraphResponse:
    resource = audit_query(call, params["query_id"])
    body = {"@odata.context":
            f"{call.request.base_url}/v1.0/$metadata#security/auditLog/queries/$entity",
            "@odata.type": "#microsoft.graph.security.auditLogQuery", **resource}
    return GraphResponse(200, body)


def list_audit_records(call: Call, params: dict[str, str]) -> GraphResponse:
    """Records of a query; empty until the query has succeeded, paged like other lists."""
    query = call.tenant.audit_queries.get(params["query_id"])
    if query is None:
        raise GraphError(404, "NotFound", f"Audit log query '{params['query_id']}' was not found.")
    records = query.records if query.resource["status"] == "succeeded" else []
    return offset_page(call.request, f"security/auditLog/queries('{params['query_id']}')/records",
                       records, default=150, maximum=1000)
