//! Makes the generated OpenAPI document exact where the generator is not: optional
//! properties are declared `nullable` (the API sends `null` for them), `$ref` properties are
//! not wrapped in `allOf` unless a `null` must be allowed, every operation lists its specific
//! error statuses with their codes, mutating operations declare `Idempotency-Key`, and answers
//! declare the headers the edge adds.

use std::collections::BTreeMap;

use mesh_contracts::ErrorCode;
use serde_json::{Map, Value, json};

use crate::idempotency::MAX_KEY_BYTES;

/// Statuses any operation may answer, whatever it does.
const EVERY_OPERATION: [u16; 6] = [400, 429, 431, 500, 503, 504];
/// Statuses of any operation with a body.
const WITH_BODY: [u16; 2] = [413, 415];
/// Statuses of every authenticated operation.
const AUTHENTICATED: [u16; 1] = [401];
/// Statuses idempotency keys add to mutating operations.
const MUTATING: [u16; 2] = [409, 422];

/// The refined document, as JSON text.
pub fn refine(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(spec) else {
        return spec.to_owned();
    };
    let requests = request_schemas(&doc);
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, schema) in schemas.iter_mut() {
            refine_schema(schema, requests.contains(name));
        }
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                refine_operation(method, operation);
            }
        }
    }
    serde_json::to_string(&doc).unwrap_or_else(|_| spec.to_owned())
}

/// Every `$ref` target named anywhere inside `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                found.push(
                    target
                        .trim_start_matches("#/components/schemas/")
                        .to_owned(),
                );
            }
            map.values().for_each(|v| references(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

/// Schemas that only describe request bodies (directly or nested), by name.
fn request_schemas(doc: &Value) -> std::collections::BTreeSet<String> {
    let mut pending = Vec::new();
    for item in doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        for operation in item.as_object().into_iter().flat_map(|o| o.values()) {
            references(&operation["requestBody"], &mut pending);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if seen.insert(name.clone()) {
            references(&doc["components"]["schemas"][&name], &mut pending);
        }
    }
    seen
}

/// Optional properties become nullable; `allOf` wrappers of a single `$ref` are unwrapped
/// (in request bodies always, where generators choke on them; in answers unless `null` must
/// be allowed).
fn refine_schema(schema: &mut Value, request: bool) {
    let required: Vec<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        let optional = !required.contains(name);
        let reference = property
            .pointer("/allOf/0/$ref")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                property
                    .get("$ref")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        match reference {
            // A reference with a default is a request field: the plain reference.
            Some(reference) if !optional || request => {
                *property = json!({ "$ref": reference });
            }
            Some(reference) => {
                let mut wrapped = Map::new();
                if let Some(description) = property.get("description") {
                    wrapped.insert("description".into(), description.clone());
                }
                wrapped.insert("nullable".into(), Value::Bool(true));
                wrapped.insert("allOf".into(), json!([{ "$ref": reference }]));
                *property = Value::Object(wrapped);
            }
            None if optional => {
                if let Some(object) = property.as_object_mut() {
                    object.insert("nullable".into(), Value::Bool(true));
                }
            }
            None => {}
        }
    }
}

/// The codes answered with `status`, for the response's description.
fn codes_of(status: u16) -> Vec<&'static str> {
    let mut codes: Vec<&str> = ErrorCode::ALL
        .iter()
        .filter(|code| code.http_status() == status)
        .map(|code| code.as_str())
        .collect();
    if status == 400 {
        codes.push("invalid_idempotency_key");
    }
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// Statuses named in an operation's description, as in "`phone_taken` (409)".
fn mentioned_statuses(description: &str) -> Vec<u16> {
    description
        .match_indices('(')
        .filter_map(|(at, _)| description.get(at + 1..at + 4)?.parse::<u16>().ok())
        .filter(|status| (400..600).contains(status))
        .collect()
}

/// Declares the permission an operation needs (`x-permission`, and in its description) from
/// the route table.
fn declare_permission(operation: &mut Value) {
    let Some(id) = operation["operationId"].as_str() else {
        return;
    };
    let Some(permission) = crate::route_permissions::required(id) else {
        return;
    };
    let note = format!("Needs the permission `{permission}` (403 `forbidden` without it).");
    let description = match operation["description"].as_str() {
        Some(text) => format!("{text}\n\n{note}"),
        None => note,
    };
    operation["description"] = json!(description);
    operation["x-permission"] = json!(permission.to_string());
}

fn refine_operation(method: &str, operation: &mut Value) {
    declare_permission(operation);
    let mutating = matches!(method, "post" | "put" | "patch" | "delete");
    let authenticated = operation.get("security").is_some();
    let has_body = operation.get("requestBody").is_some();
    let description = format!(
        "{} {}",
        operation["summary"].as_str().unwrap_or(""),
        operation["description"].as_str().unwrap_or("")
    );
    let mut statuses: Vec<u16> = EVERY_OPERATION.to_vec();
    statuses.extend(mentioned_statuses(&description));
    if authenticated {
        statuses.extend(AUTHENTICATED);
    }
    if has_body {
        statuses.extend(WITH_BODY);
    }
    if mutating {
        statuses.extend(MUTATING);
    }
    if operation.get("parameters").is_some() {
        statuses.push(404);
    }
    statuses.sort_unstable();
    statuses.dedup();
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let problem = json!({
        "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } }
    });
    let mut specific = BTreeMap::new();
    for status in statuses {
        let codes = codes_of(status);
        let listed = if codes.is_empty() {
            String::new()
        } else {
            format!(" Codes: `{}`.", codes.join("`, `"))
        };
        specific.insert(
            status.to_string(),
            json!({
                "description": format!("Refused or failed (problem+json).{listed}"),
                "headers": response_headers(status),
                "content": problem.clone(),
            }),
        );
    }
    for (status, response) in specific {
        responses.entry(status).or_insert(response);
    }
    for (status, response) in responses.iter_mut() {
        if status.starts_with('2')
            && let Some(response) = response.as_object_mut()
        {
            response.insert("headers".into(), response_headers(200));
        }
    }
    if mutating {
        let parameters = operation
            .as_object_mut()
            .map(|o| o.entry("parameters").or_insert_with(|| json!([])));
        if let Some(Value::Array(parameters)) = parameters {
            parameters.push(json!({
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": "Makes a retry safe: the first answer (status < 500) is replayed with \
                    `Idempotent-Replayed: true` for 24 h. 409 `idempotency_in_progress` while the first \
                    runs, 422 `idempotency_key_mismatch` for another body. `X-Idempotency-Key` is the same.",
                "schema": { "type": "string", "minLength": 1, "maxLength": MAX_KEY_BYTES, "pattern": "^[!-~]+$" }
            }));
        }
    }
}

/// Headers the edge adds to answers of `status`.
fn response_headers(status: u16) -> Value {
    let text =
        |description: &str| json!({ "description": description, "schema": { "type": "string" } });
    let mut headers = json!({
        "x-request-id": text("The id of this request in the mesh's logs."),
        "RateLimit-Policy": text("The tightest limit of this route: `\"<limit>\";q=<burst>;w=<seconds>`."),
        "RateLimit": text("Its state: `\"<limit>\";r=<left>;t=<seconds until full>`."),
        "X-Token-Expires-At": text("Authenticated answers: when the access token expires (RFC 3339)."),
        "X-Token-Refresh-Required": text("`true` when the access token is about to expire."),
    });
    if status < 300 {
        headers["Idempotent-Replayed"] =
            text("`true` when this is the stored answer to an earlier request with the same key.");
    }
    if status == 429 || status == 503 {
        headers["Retry-After"] = json!({
            "description": "Seconds to wait before retrying.",
            "schema": { "type": "integer" }
        });
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_properties_are_nullable_and_refs_unwrapped() {
        let doc =
            serde_json::from_str::<Value>(&refine(&crate::openapi("http://x").spec())).unwrap();
        let group = &doc["components"]["schemas"]["Group"];
        assert_eq!(group["properties"]["icon"]["nullable"], true);
        assert_eq!(group["properties"]["id"].get("nullable"), None);
        assert_eq!(group["properties"]["my_role"]["nullable"], true);
        assert_eq!(
            group["properties"]["my_role"]["allOf"],
            json!([{ "$ref": "#/components/schemas/GroupRole" }])
        );
        let create = &doc["components"]["schemas"]["CreateGroupRequest"];
        assert_eq!(
            create["properties"]["join_policy"],
            json!({ "$ref": "#/components/schemas/JoinPolicy" })
        );
        let login = &doc["paths"]["/v1/auth/login"]["post"];
        for status in ["400", "401", "413", "429", "431", "500", "503"] {
            assert!(login["responses"].get(status).is_some(), "{status}");
        }
        assert!(
            login["responses"]["429"]["description"]
                .as_str()
                .unwrap()
                .contains("login_locked")
        );
        assert!(
            login["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "Idempotency-Key")
        );
        assert!(
            login["responses"]["429"]["headers"]
                .get("Retry-After")
                .is_some()
        );
    }

    #[test]
    fn statuses_named_in_descriptions_are_found() {
        assert_eq!(
            mentioned_statuses("Fails with `phone_taken` (409) or `x` (400) (see docs)"),
            vec![409, 400]
        );
    }
}
