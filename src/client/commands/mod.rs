//! The commands the proxy answers itself, one file per command family.

mod auth;
mod client;
mod command;
mod config;
mod hello;
mod info;
mod slowlog;

pub(in crate::client) use auth::*;
pub(in crate::client) use client::*;
pub(in crate::client) use command::*;
pub(in crate::client) use config::*;
pub(in crate::client) use hello::*;
pub(in crate::client) use info::*;
pub(in crate::client) use slowlog::*;
