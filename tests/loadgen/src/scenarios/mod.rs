//! The scenarios and what they share: the mesh's API, the user pool, opening many sockets at
//! once.

use std::time::Duration;

use futures::{StreamExt, stream};

use crate::api::Api;
use crate::users::Pool;
use crate::ws::{self, Profile, Socket};

pub mod fanout;
pub mod idle;
pub mod latency;
mod pairs;
pub mod throughput;

/// What every scenario needs.
pub struct Ctx {
    pub api: Api,
    pub pool: Pool,
    pub ws_url: String,
}

/// Opens one socket per token, `concurrency` at a time; answers the sockets opened (in the
/// order of `tokens`, `None` where opening failed) and the failures' messages.
pub async fn open_sockets(
    url: &str,
    tokens: &[String],
    profile: Profile,
    concurrency: usize,
) -> (Vec<Option<Socket>>, Vec<String>) {
    let opened: Vec<(usize, anyhow::Result<Socket>)> = stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| async move { (i, ws::connect(url, token, profile).await) })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut sockets: Vec<Option<Socket>> = (0..tokens.len()).map(|_| None).collect();
    let mut failures = Vec::new();
    for (i, result) in opened {
        match result {
            Ok(socket) => sockets[i] = Some(socket),
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    (sockets, failures)
}

/// `seconds` as a `Duration`, accepting fractions.
pub fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.0))
}

/// A message body of `len` bytes.
pub fn body(len: usize) -> String {
    let mut body = String::from("loadgen ");
    while body.len() < len {
        body.push(char::from(b'a' + (body.len() % 26) as u8));
    }
    body.truncate(len.max(1));
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_asked_length() {
        assert_eq!(body(64).len(), 64);
        assert_eq!(body(3).len(), 3);
        assert_eq!(body(0).len(), 1, "never empty");
    }
}
