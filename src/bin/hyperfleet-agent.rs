//! `hyperfleet-agent`: the guest agent (the logic is in `hyperfleet::agent::guest`).

fn main() -> std::process::ExitCode {
    hyperfleet::agent::guest::main()
}
