//! The `plugdesk` binary: everything lives in the library, see `plugdesk_core::cli`.

fn main() -> std::process::ExitCode {
    plugdesk_core::cli::run()
}
