//! Waiting that gives way to shutdown: background loops pause between attempts this way.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sleeps for `delay` unless `stop` is cancelled first; true when stopped.
pub async fn pause(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}
