//! [`Failure`]: why an hcctl command failed, and the exit code scripts can branch on.

use std::fmt;

use crate::cli::UsageError;
use crate::client::ClientError;

#[derive(Debug)]
pub enum Failure {
    /// Bad arguments clap could not catch, or an unreadable spec file: exit 2, like clap's own.
    Usage(UsageError),
    /// The call failed: exit 1 for a refusal or a bad answer, 3 when no server was reached.
    Client(ClientError),
    /// The reply could not be printed.
    Output(String),
}

impl Failure {
    pub const EXIT_REFUSED: u8 = 1;
    pub const EXIT_USAGE: u8 = 2;
    pub const EXIT_UNREACHABLE: u8 = 3;

    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => Self::EXIT_USAGE,
            Failure::Client(ClientError::Unreachable { .. }) => Self::EXIT_UNREACHABLE,
            Failure::Client(_) | Failure::Output(_) => Self::EXIT_REFUSED,
        }
    }

    /// Printed in parentheses after the message: the API's error kind for refusals.
    pub fn kind(&self) -> &str {
        match self {
            Failure::Usage(_) => "usage",
            Failure::Client(e) => e.kind(),
            Failure::Output(_) => "output",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(e) => e.fmt(f),
            Failure::Client(e) => e.fmt(f),
            Failure::Output(e) => write!(f, "cannot print the reply: {e}"),
        }
    }
}

impl From<UsageError> for Failure {
    fn from(e: UsageError) -> Self {
        Failure::Usage(e)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure::Output(e.to_string())
    }
}
