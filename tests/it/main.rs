//! Every integration test, in one binary: one link step instead of one per
//! file, and fixtures shared in `common`. A module per area; run one with
//! `cargo test --test it -- <module>::`.

mod cluster;
mod command_table;
mod commands;
mod common;
mod differential;
mod django;
mod docs;
mod fairness;
mod hardening;
mod health;
mod keyed;
mod keys_differential;
mod keyspace;
mod migration;
mod nemesis;
mod node_stores;
mod ops;
mod other_stores;
mod proxy;
mod pubsub;
mod python_stores;
mod relay;
mod rust_client;
mod scripts;
mod security;
mod sentinel;
mod status_page;
mod structure;
mod tls;
mod tools;
mod tracking;
mod transactions;
mod users;
mod workers;
