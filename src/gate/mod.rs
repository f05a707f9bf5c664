//! A server-side tower layer that lets a request through only when the quality gate approves it.
