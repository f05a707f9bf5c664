//! The response future of [`QualityClient`](super::QualityClient).

use tower::Service;

use super::Stack;
use crate::wire::QualityRequest;

/// The future a [`QualityClient`](super::QualityClient) call returns: the
/// [`Identify`](crate::call::Identify) layer's, over the whole stack.
///
/// Dropping it cancels the call at once: the attempt in flight or the
/// backoff wait is abandoned and the concurrency slot is released.
pub type ResponseFuture = <Stack as Service<QualityRequest>>::Future;
