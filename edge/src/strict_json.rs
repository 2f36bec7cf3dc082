//! JSON bodies are held to the types of the OpenAPI document before any handler parses them:
//! the generated parsers would turn `"phone": 15550001` or `"name": true` into strings, and
//! the API promises a 400 instead. Only that coercion is checked here (a number or boolean
//! where the schema says string); everything else is the handlers' parsing.

use std::collections::HashMap;

use serde_json::Value;

/// The request-body schema of each operation, by operation id.
pub struct BodySchemas {
    doc: Value,
    schemas: HashMap<String, Value>,
}

impl BodySchemas {
    /// `doc` is the OpenAPI document (JSON).
    pub fn new(doc: &Value) -> Self {
        let mut schemas = HashMap::new();
        for item in doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|paths| paths.values())
        {
            for operation in item.as_object().into_iter().flat_map(|ops| ops.values()) {
                let id = operation["operationId"].as_str();
                let schema = operation
                    .pointer("/requestBody/content")
                    .and_then(Value::as_object)
                    .and_then(|content| content.values().next())
                    .and_then(|media| media.get("schema"));
                if let (Some(id), Some(schema)) = (id, schema) {
                    schemas.insert(id.to_owned(), schema.clone());
                }
            }
        }
        Self {
            doc: doc.clone(),
            schemas,
        }
    }

    /// Where `body`, sent to operation `operation`, has a number or boolean in place of a
    /// string, as a JSON path (`$.phone`).
    pub fn coerced_field(&self, operation: &str, body: &[u8]) -> Option<String> {
        let schema = self.schemas.get(operation)?;
        let value: Value = serde_json::from_slice(body).ok()?;
        self.find(schema, &value, "$".to_owned(), 0)
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let target = schema
            .get("$ref")
            .or_else(|| schema.pointer("/allOf/0/$ref"))
            .and_then(Value::as_str);
        match target.and_then(|t| t.strip_prefix("#/")) {
            Some(pointer) => self.doc.pointer(&format!("/{pointer}")).unwrap_or(schema),
            None => schema,
        }
    }

    fn find(&self, schema: &Value, value: &Value, at: String, depth: usize) -> Option<String> {
        if depth > 16 {
            return None;
        }
        let schema = self.resolve(schema);
        match value {
            Value::Number(_) | Value::Bool(_) if schema["type"] == "string" => Some(at),
            Value::Object(fields) => fields.iter().find_map(|(name, field)| {
                let property = schema.pointer(&format!("/properties/{name}"))?;
                self.find(property, field, format!("{at}.{name}"), depth + 1)
            }),
            Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                self.find(schema.get("items")?, item, format!("{at}[{i}]"), depth + 1)
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_booleans_where_strings_belong_are_found() {
        let doc: Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        let (schemas, operations) = (
            BodySchemas::new(&doc),
            crate::operations::Operations::new(&doc),
        );
        let find = |method: &str, path: &str, body: &str| {
            let operation = operations.find(method, path)?;
            schemas.coerced_field(&operation.id, body.as_bytes())
        };
        assert_eq!(
            find(
                "POST",
                "/v1/auth/login",
                r#"{"phone":15550001,"password":"x"}"#
            ),
            Some("$.phone".to_owned())
        );
        assert_eq!(
            find(
                "POST",
                "/v1/auth/login",
                r#"{"phone":"+15550001","password":"x"}"#
            ),
            None
        );
        assert_eq!(
            find("POST", "/v1/groups", r#"{"name":true}"#),
            Some("$.name".to_owned())
        );
        assert_eq!(
            find("POST", "/v1/groups", r#"{"name":"ok","max_members":5}"#),
            None
        );
        let group = uuid::Uuid::nil();
        assert_eq!(
            find(
                "POST",
                &format!("/v1/groups/{group}/invite"),
                r#"{"user_id":1}"#
            ),
            Some("$.user_id".to_owned())
        );
        assert_eq!(
            find(
                "PUT",
                &format!("/v1/admin/users/{group}/roles"),
                r#"{"roles":["user",false]}"#
            ),
            Some("$.roles[1]".to_owned())
        );
        assert_eq!(find("GET", "/v1/users/me", "{}"), None);
    }
}
