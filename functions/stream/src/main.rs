fn main() -> std::process::ExitCode {
    eprintln!("audit-log-stream is not implemented yet");
    std::process::ExitCode::FAILURE
}
