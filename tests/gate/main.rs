//! The quality gate as server middleware: at poll level against
//! tower-test's mock quality service and hand-driven inner services
//! (readiness, ordering, fail closed), then end to end as an axum
//! `route_layer` in front of a real coordinator on 127.0.0.1.

mod axum;
mod poll;
