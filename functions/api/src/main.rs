fn main() -> std::process::ExitCode {
    eprintln!("audit-log-api is not implemented yet");
    std::process::ExitCode::FAILURE
}
