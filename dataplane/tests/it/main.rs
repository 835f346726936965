//! In-process HTTP tests of the data plane through the real actix app, against a fresh
//! Postgres database per test and real storage (a temp directory, or Garage S3).

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

mod api;
mod auth;
mod cache;
mod collection;
mod conformance;
mod dashboard;
mod events;
mod fsck;
mod harness;
mod hostile;
mod isolation;
mod management;
mod races;
mod s3;
