//! End-to-end tests of the mock upstream over real HTTP connections.

mod cli;
mod faults;
mod recording;
mod support;
mod tls;
mod wire_formats;
