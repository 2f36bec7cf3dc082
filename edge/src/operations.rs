//! The API's operations as the OpenAPI document lists them (method, path template, operation
//! id), and which one a request names: the middleware keys idempotency records and audit
//! records only to requests an operation serves, and looks up their body schemas by it.

use serde_json::Value;

/// One operation of the API.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Its operation id (`create_group`).
    pub id: String,
    /// Its method, upper case.
    pub method: String,
    /// Its path template (`/v1/groups/{group_id}`).
    pub template: String,
    segments: Vec<String>,
}

impl Operation {
    /// How many of `path`'s segments this operation takes as parameters, when it matches.
    fn matches(&self, method: &str, path: &[&str]) -> Option<usize> {
        if self.method != method || self.segments.len() != path.len() {
            return None;
        }
        let mut params = 0;
        for (pattern, segment) in self.segments.iter().zip(path) {
            if pattern.starts_with('{') && pattern.ends_with('}') {
                if segment.is_empty() {
                    return None;
                }
                params += 1;
            } else if pattern != segment {
                return None;
            }
        }
        Some(params)
    }
}

/// Every operation of the OpenAPI document.
#[derive(Debug, Clone, Default)]
pub struct Operations(Vec<Operation>);

impl Operations {
    /// `doc` is the OpenAPI document (JSON).
    pub fn new(doc: &Value) -> Self {
        let mut operations = Vec::new();
        for (template, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, operation) in item.as_object().into_iter().flatten() {
                if let Some(id) = operation["operationId"].as_str() {
                    operations.push(Operation {
                        id: id.to_owned(),
                        method: method.to_uppercase(),
                        template: template.clone(),
                        segments: template.split('/').map(str::to_owned).collect(),
                    });
                }
            }
        }
        Self(operations)
    }

    /// The operation `method` on `path` names; a literal segment wins over a parameter
    /// (`/v1/groups/mine` over `/v1/groups/{group_id}`).
    pub fn find(&self, method: &str, path: &str) -> Option<&Operation> {
        let path: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .filter_map(|op| op.matches(method, &path).map(|params| (params, op)))
            .min_by_key(|(params, _)| *params)
            .map(|(_, op)| op)
    }

    /// The operation with id `id`.
    pub fn by_id(&self, id: &str) -> Option<&Operation> {
        self.0.iter().find(|op| op.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> Operations {
        let doc: Value = serde_json::from_str(&crate::openapi_json()).unwrap();
        Operations::new(&doc)
    }

    #[test]
    fn requests_find_their_operation_and_nothing_else_does() {
        let ops = api();
        let group = uuid::Uuid::nil();
        let found = |method: &str, path: &str| ops.find(method, path).map(|op| op.id.as_str());
        assert_eq!(found("POST", "/v1/auth/login"), Some("login"));
        assert_eq!(found("GET", "/v1/auth/login"), None, "wrong method");
        assert_eq!(
            ops.find("POST", &format!("/v1/groups/{group}/invite"))
                .map(|op| op.template.as_str()),
            Some("/v1/groups/{group_id}/invite")
        );
        for path in [
            "/anything",
            "/v1/nope",
            "/v1/groups//invite",
            "/v1/auth/login/x",
        ] {
            assert_eq!(found("POST", path), None, "{path}");
        }
        assert_eq!(
            ops.by_id("admin_disable_user")
                .map(|op| op.template.as_str()),
            Some("/v1/admin/users/{user_id}/disable")
        );
        assert!(
            Operations::new(&Value::Null)
                .find("POST", "/v1/auth/login")
                .is_none()
        );
        let login = ops.by_id("login").expect("login");
        assert_eq!(
            (login.method.as_str(), login.template.as_str()),
            ("POST", "/v1/auth/login")
        );
    }

    #[test]
    fn a_literal_segment_wins_over_a_parameter() {
        let doc = serde_json::json!({ "paths": {
            "/v1/things/{id}": { "get": { "operationId": "get_thing" } },
            "/v1/things/mine": { "get": { "operationId": "my_things" } },
        }});
        let ops = Operations::new(&doc);
        assert_eq!(
            ops.find("GET", "/v1/things/mine").map(|op| op.id.as_str()),
            Some("my_things")
        );
        assert_eq!(
            ops.find("GET", "/v1/things/7").map(|op| op.id.as_str()),
            Some("get_thing")
        );
    }
}
