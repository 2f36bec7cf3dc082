//! The mesh's REST API as the load generator uses it for setup: accounts, tokens, friendships
//! and groups. Only the fields the load generator needs are decoded.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use reqwest::{Client, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// An HTTP answer other than 2xx, with the problem document's stable `code` when there is one.
#[derive(Debug)]
pub struct ApiError {
    pub what: String,
    pub status: StatusCode,
    pub code: Option<String>,
    pub body: String,
}

impl ApiError {
    /// True when the answer carried this problem `code`.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body: String = self.body.chars().take(300).collect();
        write!(f, "{} answered {}: {body}", self.what, self.status)
    }
}

impl std::error::Error for ApiError {}

/// What `/v1/auth/login` and `/v1/auth/refresh` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds the access token stays valid.
    pub expires_in: u64,
    pub user_id: Uuid,
}

#[derive(Debug, Deserialize)]
struct FriendRequestOutcome {
    request: IdOnly,
    became_friends: bool,
}

#[derive(Debug, Deserialize)]
struct IdOnly {
    id: Uuid,
}

/// The REST client of one mesh.
#[derive(Clone)]
pub struct Api {
    http: Client,
    base: String,
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Self::new_from(base, None)
    }

    /// A client whose connections leave from `source` when given (the mesh tells clients
    /// apart by address).
    pub fn new_from(base: &str, source: Option<std::net::IpAddr>) -> anyhow::Result<Self> {
        let http = Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .local_address(source)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:8080`.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.post(&url).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading the answer of POST {path}"))?;
        if !status.is_success() {
            let code = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned));
            return Err(ApiError {
                what: format!("POST {path}"),
                status,
                code,
                body: text,
            }
            .into());
        }
        serde_json::from_str(&text).with_context(|| format!("decoding the answer of POST {path}"))
    }

    /// Creates an account; its answer carries the new session's tokens, so the account needs
    /// no sign-in (no second password hash) before its first use.
    pub async fn register(
        &self,
        phone: &str,
        password: &str,
        nickname: &str,
    ) -> anyhow::Result<TokenPair> {
        let body = json!({ "phone": phone, "password": password, "nickname": nickname });
        self.post("/v1/auth/register", None, &body).await
    }

    pub async fn login(&self, phone: &str, password: &str) -> anyhow::Result<TokenPair> {
        let body = json!({ "phone": phone, "password": password, "device_name": "loadgen" });
        self.post("/v1/auth/login", None, &body).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> anyhow::Result<TokenPair> {
        let body = json!({ "refresh_token": refresh_token });
        self.post("/v1/auth/refresh", None, &body).await
    }

    /// Makes `a` and `b` friends: `a` asks and `b` accepts. A friendship that already exists,
    /// or a request left pending by an earlier run, ends the same way.
    pub async fn befriend(&self, a: (&str, Uuid), b: (&str, Uuid)) -> anyhow::Result<()> {
        let ask = json!({ "user_id": b.1, "message": "loadgen" });
        match self
            .post::<FriendRequestOutcome>("/v1/friend-requests", Some(a.0), &ask)
            .await
        {
            Ok(outcome) if outcome.became_friends => Ok(()),
            Ok(outcome) => {
                let path = format!("/v1/friend-requests/{}/accept", outcome.request.id);
                self.post::<Value>(&path, Some(b.0), &json!({})).await?;
                Ok(())
            }
            Err(err) => match err.downcast_ref::<ApiError>() {
                Some(e) if e.is("already_friends") => Ok(()),
                // Our earlier request still waits: asking back makes the two friends.
                Some(e) if e.is("duplicate_request") => {
                    let back = json!({ "user_id": a.1 });
                    self.post::<Value>("/v1/friend-requests", Some(b.0), &back)
                        .await?;
                    Ok(())
                }
                _ => Err(err),
            },
        }
    }

    /// Lifts a user's plan limits (messages per day, groups owned, group size, friend
    /// requests) as an administrator: the bench's few users send and own far more than the
    /// free plan allows.
    pub async fn lift_quota(&self, admin_token: &str, user: Uuid) -> anyhow::Result<()> {
        let body = json!({
            "plan": "pro",
            "overrides": {
                "messages_per_day": 1_000_000_000u32,
                "groups_owned": 1_000_000u32,
                "group_size": 1_000_000u32,
                "friend_requests_per_day": 1_000_000_000u32,
            }
        });
        let path = format!("/v1/admin/users/{user}/quota");
        let response = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(admin_token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("PUT {path}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            anyhow::bail!(
                "PUT {path} answered {status}: {}",
                text.chars().take(300).collect::<String>()
            );
        }
        Ok(())
    }

    /// Creates an open group owned by the caller and answers its id.
    pub async fn create_open_group(
        &self,
        token: &str,
        name: &str,
        max_members: u32,
    ) -> anyhow::Result<Uuid> {
        let body = json!({ "name": name, "join_policy": "open", "max_members": max_members });
        let group: IdOnly = self.post("/v1/groups", Some(token), &body).await?;
        Ok(group.id)
    }

    /// Joins an open group.
    pub async fn join_group(&self, token: &str, group: Uuid) -> anyhow::Result<()> {
        let path = format!("/v1/groups/{group}/join");
        self.post::<Value>(&path, Some(token), &json!({})).await?;
        Ok(())
    }
}
