//! The log's commands live in `hc_api::command` (they are also the gRPC `Propose` payload).
pub use hc_api::command::{Command, Output, Request, Response};
