//! Reading a pull consumer in batches: wait for one message, then take what is already
//! buffered, so a busy stream is stored in large batches and a quiet one without delay.

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::pull;
use futures::{FutureExt, StreamExt};

/// One item of a pull consumer's message stream.
pub(crate) type Next = Result<Message, async_nats::error::Error<pull::MessagesErrorKind>>;

/// Waits for the next message, then takes every message already buffered, up to `max` in
/// all, each turned into a `T` by `convert` (the first failure ends the batch with it).
/// `None` when the stream ended.
pub(crate) async fn next_batch<T, E>(
    messages: &mut pull::Stream,
    max: usize,
    mut convert: impl FnMut(Next) -> Result<T, E>,
) -> Result<Option<Vec<T>>, E> {
    let Some(first) = messages.next().await else {
        return Ok(None);
    };
    let mut batch = Vec::with_capacity(max.min(64));
    batch.push(convert(first)?);
    while batch.len() < max {
        match messages.next().now_or_never() {
            Some(Some(next)) => batch.push(convert(next)?),
            Some(None) | None => break,
        }
    }
    Ok(Some(batch))
}
