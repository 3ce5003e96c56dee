//! The `plugdesk` binary: the command line (`serve`, `init`, `mail-in`, `import`, `secrets`, …)
//! and the tooling that is no part of a server — `plugin new | build | test` (`devkit`) and
//! `bench`.

mod bench;
mod cli;
mod devkit;
mod import;

// The layers below, named as `crate::ticket`, `crate::api`, ... in this crate.
#[allow(unused_imports)]
use plugdesk_api::{api, server};
#[allow(unused_imports)]
use plugdesk_core::*;

fn main() -> std::process::ExitCode {
    cli::run()
}
