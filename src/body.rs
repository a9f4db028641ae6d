//! Bounded reads of HTTP answers: a peer can send at most `limit` bytes into memory, whatever
//! its `Content-Length` says.

/// The body of `resp`, up to `limit` bytes, and whether it was longer (the rest is not read).
///
/// Errors: the transport failed while reading.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut buf = Vec::with_capacity(
        resp.content_length()
            .map_or(8 * 1024, |n| n.min(limit as u64) as usize),
    );
    while let Some(chunk) = resp.chunk().await? {
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, false))
}

/// A transport error's cause chain without the request's URL (its query string may carry an
/// account id or, for a webhook, a receiver's token).
pub(crate) fn transport_message(e: reqwest::Error) -> String {
    crate::telemetry::error_chain(&e.without_url())
}
