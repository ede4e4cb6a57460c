//! The one-click unsubscribe endpoint (RFC 8058) that `campaign unsubscribe-server` runs.
//!
//! Owns answering the links the campaigns' `[message] unsubscribe_url` templates make:
//! finding the campaign, address and token in the query ([`route`]) and appending the
//! address to the suppression list ([`list`]). It never sends mail, never reads donor files
//! or run directories, and never logs the secret, a token, a query string or more of an
//! address than its domain.

pub mod list;
pub mod route;

pub use list::{ListError, SuppressionList};
pub use route::{Route, RouteError, Routes, RoutesError};
