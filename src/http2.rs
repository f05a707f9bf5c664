//! Recognising HTTP/2 requests the coordinator never processed.

use std::error::Error as StdError;

/// Whether an error says the coordinator did not process the request, by
/// RFC 9113 §8.7: its stream was above the last stream id of a `GOAWAY`, or
/// was reset with `REFUSED_STREAM`. Such a request is safe to send again,
/// even a `POST`.
///
/// The error reaches the caller as hyper-util's error, wrapping hyper's,
/// wrapping h2's: the source chain is walked for the `h2::Error`. h2 marks
/// a `GOAWAY` error remote only for the streams that `GOAWAY` left
/// unprocessed; streams at or below its last id fail otherwise.
pub(crate) fn unprocessed_h2(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && (h2.reason() == Some(h2::Reason::REFUSED_STREAM) || h2.is_go_away());
        }
        next = e.source();
    }
    false
}
