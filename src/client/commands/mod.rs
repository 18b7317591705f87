//! The commands the proxy answers itself, one file per command family.

pub(in crate::client) mod auth;
pub(in crate::client) mod client;
pub(in crate::client) mod command;
pub(in crate::client) mod config;
pub(in crate::client) mod hello;
pub(in crate::client) mod info;
pub(in crate::client) mod slowlog;
