//! The few Matrix client-server API calls the peer scenarios make against Synapse: register
//! (the dummy flow, open registration on the bench's Synapse), create a direct room, join it,
//! send a text message with a transaction id, and long-poll `/sync`.

use std::time::Duration;

use anyhow::Context;
use reqwest::{Client, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Matrix {
    http: Client,
    base: String,
}

/// A signed-in Matrix user.
#[derive(Debug, Clone)]
pub struct MatrixUser {
    pub user_id: String,
    pub token: String,
}

#[derive(Debug, Deserialize)]
struct Registered {
    user_id: String,
    access_token: String,
}

/// One `/sync` answer: the next batch token and every `m.room.message` body received.
pub struct Synced {
    pub next_batch: String,
    pub bodies: Vec<String>,
}

/// `/sync` filter: only room timelines, large enough not to be cut (`limited`).
const SYNC_FILTER: &str = r#"{"room":{"timeline":{"limit":1000,"types":["m.room.message"]},"state":{"lazy_load_members":true},"ephemeral":{"not_types":["*"]},"account_data":{"not_types":["*"]}},"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]}}"#;

impl Matrix {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: Client::builder()
                .timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(1024)
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_matrix/client/v3{path}", self.base)
    }

    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let value = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// Registers `username` with the dummy flow (a first call opens the session).
    pub async fn register(&self, username: &str, password: &str) -> anyhow::Result<MatrixUser> {
        let ask = json!({ "username": username, "password": password, "inhibit_login": false });
        let (status, value) = self.post("/register", None, &ask).await?;
        let value = if status == StatusCode::UNAUTHORIZED {
            let session = value["session"].as_str().unwrap_or_default().to_owned();
            let mut again = ask.clone();
            again["auth"] = json!({ "type": "m.login.dummy", "session": session });
            let (status, value) = self.post("/register", None, &again).await?;
            anyhow::ensure!(
                status.is_success(),
                "POST /register answered {status}: {value}"
            );
            value
        } else {
            anyhow::ensure!(
                status.is_success(),
                "POST /register answered {status}: {value}"
            );
            value
        };
        let registered: Registered = serde_json::from_value(value).context("decoding /register")?;
        Ok(MatrixUser {
            user_id: registered.user_id,
            token: registered.access_token,
        })
    }

    /// Creates a private room with `other` invited, and has them join it.
    pub async fn direct_room(&self, me: &MatrixUser, other: &MatrixUser) -> anyhow::Result<String> {
        let body = json!({ "preset": "trusted_private_chat", "invite": [other.user_id], "is_direct": true });
        let (status, value) = self.post("/createRoom", Some(&me.token), &body).await?;
        anyhow::ensure!(
            status.is_success(),
            "POST /createRoom answered {status}: {value}"
        );
        let room = value["room_id"].as_str().context("no room_id")?.to_owned();
        let (status, value) = self
            .post(
                &format!("/join/{}", encode(&room)),
                Some(&other.token),
                &json!({}),
            )
            .await?;
        anyhow::ensure!(status.is_success(), "POST /join answered {status}: {value}");
        Ok(room)
    }

    /// Sends a text message; answers once Synapse persisted it (the answer carries its
    /// event id).
    pub async fn send(
        &self,
        user: &MatrixUser,
        room: &str,
        txn: &str,
        body: &str,
    ) -> anyhow::Result<()> {
        let path = format!(
            "/rooms/{}/send/m.room.message/{}",
            encode(room),
            encode(txn)
        );
        let response = self
            .http
            .put(self.url(&path))
            .bearer_auth(&user.token)
            .json(&json!({ "msgtype": "m.text", "body": body }))
            .send()
            .await
            .context("PUT send")?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            anyhow::bail!(
                "PUT send answered {status}: {}",
                text.chars().take(200).collect::<String>()
            );
        }
        Ok(())
    }

    /// One `/sync` (long-polling up to `timeout` after `since`).
    pub async fn sync(
        &self,
        user: &MatrixUser,
        since: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Synced> {
        let mut query = vec![
            ("filter", SYNC_FILTER.to_owned()),
            ("timeout", timeout.as_millis().to_string()),
        ];
        if let Some(since) = since {
            query.push(("since", since.to_owned()));
        }
        let url = reqwest::Url::parse_with_params(&self.url("/sync"), &query)?;
        let value: Value = self
            .http
            .get(url)
            .bearer_auth(&user.token)
            .send()
            .await
            .context("GET /sync")?
            .error_for_status()?
            .json()
            .await
            .context("decoding /sync")?;
        let next_batch = value["next_batch"]
            .as_str()
            .context("no next_batch")?
            .to_owned();
        let mut bodies = Vec::new();
        if let Some(rooms) = value["rooms"]["join"].as_object() {
            for room in rooms.values() {
                for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                    if let Some(body) = event["content"]["body"].as_str() {
                        bodies.push(body.to_owned());
                    }
                }
            }
        }
        Ok(Synced { next_batch, bodies })
    }
}

/// Percent-encodes a path segment (room ids hold `!` and `:`).
fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_encoded() {
        assert_eq!(encode("!abc:localhost"), "%21abc%3Alocalhost");
        assert_eq!(encode("lg-1_2.x"), "lg-1_2.x");
    }
}
